"""Delivery: take queued deliveries to Loops, one contact at a time, at each account's pace.

For one delivery, Loops must end up with the contact and, if the endpoint maps one, the
event. The calls, fewest first:

    contact unknown to the bridge in that account
        POST /contacts/create  {email, source, userGroup, names}
            200 -> known, names already set      409 -> known, names still to set
    endpoint maps a Loops event
        POST /events/send      {email, eventName, eventProperties, names still to set}
                               Idempotency-Key: stable per endpoint + provider event
    otherwise, names still to set
        PUT /contacts/update   {email, names}

An event without an email that names a customer to look up (``providers.Event.lookup``:
Stripe's subscription events carry only ``cus_...``) first gets the customer's email and name
from Stripe, with the endpoint's Stripe API key (:class:`bridge.stripe_api.StripeAPI`, in a
thread), and is then delivered as an event with that email and names. A customer's email is
kept :data:`LOOKUP_SECONDS` per key and customer, and deliveries that need one customer while
it is being looked up wait for that one call, so a burst of events about one subscription
asks Stripe once. Stripe having no such customer, or the customer no email, fails the
delivery (nothing can reach Loops; that answer is not kept, so a retry once the email is
added in Stripe asks again); Stripe out of reach or refusing the key retries it on the
schedule below, saying what to fix.

Each step that succeeded is remembered (the contact table), so a retry resumes where the
last attempt stopped and never re-creates a contact or re-fires a workflow. Every call is
recorded with its answer. What each answer does is decided by its verdict (the table in
:mod:`bridge.loops`): the delivery's new state here, the account's in :mod:`bridge.accounts`.

Retry schedule: 5 s (BRIDGE_RETRY_BASE_SECONDS), 10 s, 20 s, ... doubling up to 1 hour
between tries, each +-20 % jitter, for 72 hours after it was queued (BRIDGE_MAX_AGE_HOURS,
as long as Stripe itself retries); then it is dead. A 429 holds the whole account for the
wait Loops asks (see :mod:`bridge.pacing`); an outage or a refused API key holds the whole
account and probes it (see :mod:`bridge.queue`), so deliveries resume together as soon as
Loops answers again.

Out of order: Stripe does not promise order. Names are last-writer-wins by the provider's
event time: an event older than the one that last set a contact's names still sends its
Loops event, without the names.

Shutdown: :meth:`Worker.stop` stops claiming; deliveries in flight get a few seconds to
finish, then are interrupted, recorded and put back in the queue, due at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import secrets
import shlex
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import httpx
from sqlalchemy.engine import Engine

import providers
from bridge import accounts, metrics
from bridge.loops import Answer, LoopsClient, Verdict
from bridge.models import DEAD, DELIVERED, FAILED, IGNORED, QUEUED
from bridge.outcomes import iso
from bridge.pacing import Paces
from bridge.queue import Job, Progress, Queue, Settled
from bridge.settings import Settings
from bridge.stripe_api import StripeAPI, StripeAPIError
from providers.fields import split_name, text

__all__ = ["Worker", "backoff", "idempotency_key"]

log = logging.getLogger("bridge.delivery")

LONGEST_WAIT = 3600.0
# How a delivery's reason starts when Loops already had the contact (409): backfill counts it.
ALREADY_IN_LOOPS = "contact already in Loops"
_LOOK_AGAIN_AFTER = 0.05
_PRUNE_EVERY = 3600.0
LOOKUP_SECONDS = 300.0  # how long a customer's email looked up from Stripe is reused
_LOOKUPS_KEPT = 10_000  # customers kept at most; past it, the expired ones are dropped


@dataclasses.dataclass(frozen=True, slots=True)
class _Customer:
    """What a delivery needs of a customer looked up on the platform."""

    id: str
    email: str | None
    name: str | None


def backoff(attempt: int, first: float) -> float:
    """Seconds to wait before try ``attempt + 1``, after ``attempt`` failed tries."""
    return min(LONGEST_WAIT, first * 2 ** min(attempt - 1, 64)) * random.uniform(0.8, 1.2)


def idempotency_key(endpoint_id: str, event_id: str) -> str:
    """Stable per endpoint and provider event, within Loops' 100 characters."""
    key = f"{endpoint_id}:{event_id}"
    return key if len(key) <= 100 else hashlib.sha256(key.encode()).hexdigest()


class Worker:
    """Delivers queued deliveries until stopped. Leases, backoff and the rate limit come from
    ``settings``; the rest can be passed in, so tests run the worker in-process against the
    Loops sandbox (``transport=httpx.ASGITransport(app=sandbox)``) with short intervals.
    ``stripe_api``: the client for an endpoint's Stripe API key, for customer lookups
    (default: :class:`StripeAPI` to ``settings.stripe_api_url``)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        intervals: accounts.Intervals | None = None,
        poll_seconds: float = 1.0,
        shutdown_grace: float = 5.0,
        stripe_api: Callable[[str], StripeAPI] | None = None,
    ) -> None:
        self.name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._settings = settings
        self._poll_seconds = poll_seconds
        self._shutdown_grace = shutdown_grace
        self._intervals = intervals or accounts.Intervals()
        self._queue = Queue(
            engine, self.name, settings.lease_seconds, settings.loops_rate_limit, self._intervals
        )
        self._paces = Paces(engine)
        self._client = LoopsClient(settings.loops_api_url, transport=transport)
        self._running: dict[int, tuple[Job, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()  # set by stop(): ends every wait of the loop at once
        self._stopping = False
        self._stripe_api = stripe_api or (lambda key: StripeAPI(key, settings.stripe_api_url))
        # (Stripe API key, customer id) -> (monotonic expiry, the customer, with an email)
        self._customers: dict[tuple[str, str], tuple[float, _Customer]] = {}
        self._looking_up: dict[tuple[str, str], asyncio.Future[_Customer | None]] = {}

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._stopped.set()

    async def run(self) -> None:
        log.info(
            "delivery worker %s started, sending to %s", self.name, self._settings.loops_api_url
        )
        renewed = pruned = -_PRUNE_EVERY
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    await self._claim()
                    now = time.monotonic()
                    if now - renewed >= self._settings.lease_seconds / 3:
                        renewed = now
                        await anyio.to_thread.run_sync(
                            self._queue.renew, [job for job, _ in self._running.values()]
                        )
                    if now - pruned >= _PRUNE_EVERY:
                        pruned = now
                        await self._prune()
                except Exception as exc:  # the database is down: keep going, say so
                    log.error("delivery worker: the database failed (%s); trying again", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
                # A burst of webhooks wakes the worker thousands of times a second; look at
                # the queue at most 20 times a second all the same.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), _LOOK_AGAIN_AFTER)
            await self._finish_in_flight()
        finally:
            await self._client.aclose()
            log.info("delivery worker %s stopped", self.name)

    async def _claim(self) -> None:
        room = self._settings.worker_concurrency - len(self._running)
        if room <= 0:
            return
        # Half the worker at most for one account: a storm of 429s for one account never
        # takes every slot from the others.
        per_account = max(1, self._settings.worker_concurrency // 2)
        running = Counter(job.account_id for job, _ in self._running.values())
        jobs = await anyio.to_thread.run_sync(self._queue.claim, room, running, per_account)
        for job in jobs:
            task = asyncio.create_task(self._deliver(job), name=f"delivery-{job.id}")
            self._running[job.id] = (job, task)

    async def _prune(self) -> None:
        days = self._settings.retention_days
        count = await anyio.to_thread.run_sync(self._queue.prune_payloads, days)
        if count:
            log.info(
                "deleted the bodies of %d events older than %g days "
                "(BRIDGE_RETENTION_DAYS): delivered or ignored deliveries, and Loops' webhooks",
                count,
                days,
            )

    async def _finish_in_flight(self) -> None:
        tasks = [task for _, task in self._running.values()]
        if tasks:
            log.info(
                "stopping: waiting up to %.0f s for %d deliveries in flight",
                self._shutdown_grace,
                len(tasks),
            )
            _, late = await asyncio.wait(tasks, timeout=self._shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        released = await anyio.to_thread.run_sync(self._queue.release_all)
        if released:
            log.warning("stopping: gave back %d claimed deliveries", released)

    async def _deliver(self, job: Job) -> None:
        progress = Progress()
        fields = {
            "delivery_id": job.id,
            "endpoint_id": job.endpoint_id,
            "account": job.account_name,
        }
        try:
            try:
                looked_up = await self._with_email(job)
                if isinstance(looked_up, Settled):
                    settled = looked_up
                else:
                    job, customer = looked_up  # settled as the contact it is about
                    settled = await self._attempt(job, progress, customer)
            except asyncio.CancelledError:
                settled = Settled(
                    QUEUED, "interrupted: the worker stopped; it resumes at once", time.time()
                )
            except Exception as exc:  # a bug must not lose the delivery: retry it later
                log.exception("delivery %s: unexpected error", job.id, extra=fields)
                settled = self._again(job, f"internal error in the bridge: {exc}")
            owned = await anyio.to_thread.run_sync(self._queue.settle, job, settled, progress)
            if settled.status == DELIVERED:
                metrics.delivery_finished(time.time() - job.received_at)
            level = logging.INFO if owned else logging.WARNING
            lost = "" if owned else " (its claim had lapsed: another worker has it now)"
            log.log(
                level,
                "delivery %s %s: %s%s",
                job.id,
                settled.status,
                settled.reason,
                lost,
                extra={**fields, "status": settled.status},
            )
        except Exception:
            log.exception(
                "delivery %s: could not record the outcome; it stays queued", job.id, extra=fields
            )
        finally:
            self._running.pop(job.id, None)
            self._wake.set()

    async def _attempt(
        self, job: Job, progress: Progress, customer: _Customer | None = None
    ) -> Settled:
        if job.deletion:
            return await self._delete(job, progress)
        done: list[str] = []
        provider = providers.get(job.provider)
        # The body is read for the delivery being made, not for every candidate polled.
        payload, known = await anyio.to_thread.run_sync(self._queue.payload_and_contact, job)
        if known.deleted_at is not None and job.occurred_at <= known.deleted_at:
            return Settled(IGNORED, _deleted_since(job, known.deleted_at))
        try:
            details = provider.details(payload)
        except Exception as exc:  # stored by an older version: no try would read it better
            said = str(exc)
            if not isinstance(exc, providers.Rejected):
                said = f"{type(exc).__name__}: {said}"
            reason = f"the stored event cannot be read, so nothing can be sent to Loops: {said}"
            return Settled(FAILED, reason)
        if details.renews and job.stripe_api_key:  # its looked-up copy is out of date now
            self._customers.pop((job.stripe_api_key, details.renews), None)
        if customer is not None:  # the event had no names of its own: the customer's
            first_name, last_name = split_name(customer.name)
            details = dataclasses.replace(details, first_name=first_name, last_name=last_name)
        names: dict[str, str] = {}
        if job.sync_names:
            names = {"firstName": details.first_name, "lastName": details.last_name}
            # A missing name never clears one; a long one is cut to what Loops takes.
            names = {k: v[: providers.LOOPS_STRING_LIMIT] for k, v in names.items() if v}
            if names and known.names_at is not None and job.occurred_at < known.names_at:
                names = {}
                done.append("names left alone: a newer event had set them")
        # Matched on userId where the platform has one: the email rides along, so a changed
        # primary email reaches the contact, unless a newer event's email already has.
        identity = {"userId": job.user_id} if job.user_id else {}
        if job.email and job.user_id and known.email_at and job.occurred_at < known.email_at:
            done.append("email left alone: a newer event had set it")
        elif job.email:
            identity["email"] = job.email
        created = False
        if not known.exists and job.email:  # Loops creates a contact only with an email
            contact = {**identity, "source": provider.contact_source}
            if job.user_group:
                contact["userGroup"] = job.user_group
            if job.mailing_lists:  # new contacts only: an existing one's lists are its own
                contact["mailingLists"] = {i: True for i in job.mailing_lists.split(",")}
            answer = await self._call(job, progress, self._client.create_contact, contact | names)
            if answer.verdict is Verdict.DONE:
                progress.names_sent = bool(names)
                names, done, created = {}, ["contact created", *done], True
            elif answer.verdict is Verdict.ALREADY:
                done.insert(0, ALREADY_IN_LOOPS)
            else:
                return self._failure(job, answer)
            progress.contact_known = True
        if job.backfill:  # an import leaves a contact Loops already has as it is
            if known.exists:
                done.insert(0, ALREADY_IN_LOOPS)
            names = {}
        if event_name := job.loops_event_name:
            event = {
                **identity,
                "eventName": event_name,
                "eventProperties": details.properties,
                **names,
            }
            key = job.idempotency_key or idempotency_key(job.endpoint_id, job.event_id)
            answer = await self._call(job, progress, self._client.send_event, event, key)
            if answer.verdict is Verdict.ALREADY:
                done.append(f"event {event_name} had already been sent (same idempotency key)")
            elif answer.verdict is Verdict.DONE:
                done.append(f"event {event_name} sent")
            else:
                return self._failure(job, answer)
            progress.names_sent = progress.names_sent or bool(names)
            progress.contact_known = True  # Loops makes the contact an event is sent for
        elif names or (job.user_id and not created and "email" in identity):
            answer = await self._call(
                job, progress, self._client.update_contact, {**identity, **names}
            )
            if answer.verdict is not Verdict.DONE:
                return self._failure(job, answer)
            progress.names_sent = bool(names)
            progress.contact_known = True
            done.append("contact updated" if job.user_id else "names updated")
        if customer is not None:
            done.insert(0, f"email looked up from Stripe customer {customer.id}")
        # Every call made carried the identity, and went through.
        progress.email_sent = bool(job.user_id and "email" in identity and progress.calls)
        reason = "; ".join(done) or "contact already known, nothing to change"
        return Settled(DELIVERED, reason, last=progress.calls[-1] if progress.calls else None)

    # -- a customer's email, from Stripe ---------------------------------------------------

    async def _with_email(self, job: Job) -> tuple[Job, _Customer | None] | Settled:
        """The job with its email: as it came, or, for an event that names only a customer
        (``Details.lookup``), the customer's email from Stripe (then also the customer). A
        delivery that cannot get one is settled here: failed, or queued again."""
        if job.user_id or job.deletion or (job.email and not job.lookup):
            return job, None
        # Looked up again on a retry, though the first try kept the email: for the names.
        customer_id = job.lookup
        if customer_id is None:  # received before the bridge kept it (schema 0013)
            payload, _ = await anyio.to_thread.run_sync(self._queue.payload_and_contact, job)
            try:
                customer_id = providers.get(job.provider).details(payload).lookup
            except Exception:  # an unreadable event: the attempt says so
                return job, None
        if not customer_id:
            return job, None
        if not job.stripe_api_key:
            return Settled(
                FAILED,
                f"the event carries no email address, only Stripe customer {customer_id}, and "
                "the endpoint has no Stripe API key any more to look its email up with: add "
                f"one (`loops-bridge endpoints set-stripe-key {job.endpoint_id} -`), then "
                "retry this delivery",
            )
        try:
            customer = await self._customer(job.stripe_api_key, customer_id)
        except StripeAPIError as error:
            return self._again(
                job, f"could not look up the email of Stripe customer {customer_id}: {error}"
            )
        if customer is None:
            return Settled(
                FAILED,
                f"Stripe has no customer {customer_id} (it was deleted, or the endpoint's "
                "Stripe API key is for another account or mode), so Loops cannot be given an "
                "email address for this event: nothing was sent",
            )
        email = customer.email
        if not email or len(email) > 320 or not email.isprintable():
            what = "has no email address" if not email else "has an email that is not one"
            return Settled(
                FAILED,
                f"Stripe customer {customer_id} {what}, so Loops cannot take this event (it "
                "needs an email address): nothing was sent. Add the customer's email in Stripe; "
                "its next events are delivered, and this one can be retried",
            )
        return dataclasses.replace(job, email=email), customer

    async def _customer(self, api_key: str, customer_id: str) -> _Customer | None:
        """The customer as Stripe has it (None: no such customer, or deleted), kept for
        :data:`LOOKUP_SECONDS` when it has an email. One call per key and customer at a
        time: deliveries that need the same customer meanwhile wait for it. Raises
        StripeAPIError."""
        key = (api_key, customer_id)
        cached = self._customers.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        pending = self._looking_up.get(key)
        if pending is None:
            pending = asyncio.ensure_future(
                anyio.to_thread.run_sync(self._fetch_customer, api_key, customer_id)
            )
            self._looking_up[key] = pending
            pending.add_done_callback(lambda done: self._looked_up(key, done))
        # Shielded: a delivery cancelled at shutdown leaves the call to the others waiting.
        return await asyncio.shield(pending)

    def _looked_up(self, key: tuple[str, str], done: asyncio.Future[_Customer | None]) -> None:
        self._looking_up.pop(key, None)
        if done.cancelled() or done.exception() is not None:  # not kept: the next one asks
            return
        customer = done.result()
        if customer is None or not customer.email:  # it fails the delivery: ask again on retry
            return
        now = time.monotonic()
        if len(self._customers) >= _LOOKUPS_KEPT:
            self._customers = {k: v for k, v in self._customers.items() if v[0] > now}
            if len(self._customers) >= _LOOKUPS_KEPT:  # all fresh: start again
                self._customers.clear()
        self._customers[key] = (now + LOOKUP_SECONDS, customer)

    def _fetch_customer(self, api_key: str, customer_id: str) -> _Customer | None:
        """In a thread: the call to Stripe (StripeAPI waits out Stripe's 429s itself)."""
        found = self._stripe_api(api_key).customer(customer_id)
        if found is None:
            return None
        return _Customer(customer_id, text(found.get("email")), text(found.get("name")))

    async def _delete(self, job: Job, progress: Progress) -> Settled:
        """A deletion on the platform: what the endpoint's on-delete says, by userId where the
        platform has one. A contact Loops does not have is done, not failed."""
        if job.on_delete == "ignore":
            return Settled(DELIVERED, "deletion left alone: the endpoint's on-delete is ignore")
        identity = {"userId": job.user_id} if job.user_id else {"email": job.email or ""}
        if job.on_delete == "delete":
            answer = await self._call(job, progress, self._client.delete_contact, identity)
            if answer.verdict is Verdict.DONE or answer.status_code == 404:
                progress.contact_gone = True
                said = "contact deleted" if answer.status_code != 404 else "nothing to delete"
                return Settled(DELIVERED, f"{said} in Loops", last=answer)
            return self._failure(job, answer)
        # Unsubscribe: an update is an upsert, so only a contact Loops has is updated.
        found = await self._call(job, progress, self._client.find_contact, identity)
        if found.verdict is not Verdict.DONE:
            return self._failure(job, found)
        if found.response_body.strip() in ("", "[]"):
            progress.contact_gone = True
            return Settled(DELIVERED, "Loops has no such contact: nothing to unsubscribe")
        answer = await self._call(
            job, progress, self._client.update_contact, {**identity, "subscribed": False}
        )
        if answer.verdict is not Verdict.DONE:
            return self._failure(job, answer)
        return Settled(DELIVERED, "contact unsubscribed in Loops", last=answer)

    async def _call(self, job: Job, progress: Progress, method, *args: Any) -> Answer:  # type: ignore[no-untyped-def]
        await self._paces.wait_turn(job.account_id, job.rate_limit)
        answer: Answer = await method(job.api_key, *args)
        progress.calls.append(answer)
        metrics.loops_call(answer.status_code)
        if answer.verdict is Verdict.RETRY_AFTER:  # the whole account waits, not just this one
            await self._paces.hold(job.account_id, answer.retry_after or 1.0)
        if answer.rate_limit and self._paces.report_limit(job.account_id, answer.rate_limit):
            await anyio.to_thread.run_sync(
                self._queue.note_rate_limit, job.account_id, answer.rate_limit
            )
        return answer

    def _failure(self, job: Job, answer: Answer) -> Settled:
        if answer.verdict is Verdict.KEY_REFUSED:
            reason = (
                f"paused: Loops refused the API key of account {job.account_name!r} "
                f"({answer.message}). If the key was revoked, replace it under Loops accounts "
                "in the admin, or with `loops-bridge accounts set "
                f"{shlex.quote(job.account_name)} --api-key -`; the bridge checks the key every "
                f"{self._intervals.key_probe:g} s and resumes by itself"
            )
            return self._again(job, reason, answer, 0.0)
        if answer.verdict is Verdict.RETRY_AFTER:
            return self._again(job, answer.message, answer, answer.retry_after or 1.0)
        if answer.verdict is Verdict.HOLD:
            return self._again(job, answer.message, answer)
        return Settled(FAILED, answer.message, last=answer)

    def _again(
        self, job: Job, message: str, answer: Answer | None = None, delay: float | None = None
    ) -> Settled:
        """Queue ``job`` again after ``delay`` (default: the backoff schedule), or mark it
        dead when it has been retried for longer than the maximum age."""
        attempts = job.attempts + 1
        hours = self._settings.max_age_hours
        if time.time() - job.queued_at > hours * 3600:
            reason = f"{message} (try {attempts}; tries stop {hours:g} hours after it was queued)"
            return Settled(DEAD, reason, None, answer)
        if delay is None:
            delay = backoff(attempts, self._settings.retry_base_seconds)
        # The time, not the wait: the reason is read long after it was written.
        at = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + delay))
        later = f", next try at {at}" if delay > 0 else ""
        reason = f"{message}; try {attempts} failed{later}"
        return Settled(QUEUED, reason, time.time() + delay, answer)


def _deleted_since(job: Job, deleted_at: int) -> str:
    return (
        f"not sent: a deletion of {iso(deleted_at)} took this contact out of Loops, and this "
        f"event, of {iso(job.occurred_at)}, is no newer (it arrived late, or was sent again): "
        "sending it would create the contact again"
    )
