"""The queue (bridge/queue.py) on a real SQLite database: claims, leases and settling as
several workers see them, and the pruning of old payloads. Workers are :class:`Queue`
objects with their own names; a lapsed lease is one made with a negative length, so no
test waits for a clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bridge import accounts, db, registry
from bridge.loops import Verdict
from bridge.models import DELIVERED, FAILED, IGNORED, QUEUED, Delivery
from bridge.queue import Progress, Queue, Settled

SECRET = "whsec_queueTestSecretQQQQQQQQQQQQQQQQ"
DONE = Settled(DELIVERED, "contact created")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = db.connect(f"sqlite:///{tmp_path / 'queue.db'}")
    yield engine
    engine.dispose()


def endpoint(engine: Engine, account: str = "acme") -> str:
    """A Stripe endpoint of a new Loops account ``account``; its id."""
    registry.add_account(engine, account, f"loops_key_{account}_0000")
    return registry.create_endpoint(
        engine,
        name=account,
        account=account,
        provider="stripe",
        event_types=["invoice.paid"],
        signing_secret=SECRET,
    )


def queue(engine: Engine, endpoint_id: str, *emails: str) -> list[int]:
    """A due delivery for each email, in order; their ids."""
    now = time.time()
    with engine.begin() as conn:
        return [
            conn.execute(
                sa.insert(Delivery)
                .values(
                    endpoint_id=endpoint_id,
                    event_id=f"evt_{endpoint_id[:6]}_{i}",
                    event_type="invoice.paid",
                    occurred_at=0,
                    email=email,
                    payload=b"{}",
                    status=QUEUED,
                    received_at=now,
                    queued_at=now,
                    next_attempt_at=now - 1,
                )
                .returning(Delivery.id)
            ).scalar_one()
            for i, email in enumerate(emails)
        ]


def worker(engine: Engine, name: str, lease: float = 30.0) -> Queue:
    return Queue(engine, name, lease, 10)


def claim(q: Queue, room: int = 16) -> list:
    return q.claim(room, {}, 8)


def row(engine: Engine, delivery_id: int) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(Delivery.status, Delivery.claimed_by, Delivery.attempts).where(
                Delivery.id == delivery_id
            )
        ).one()


# -- claims ---------------------------------------------------------------------------------


def test_one_delivery_per_contact_runs_at_a_time_across_workers(engine):
    first, same_contact, other = queue(
        engine, endpoint(engine), "ada@example.com", "Ada@Example.com", "bob@example.com"
    )
    one, two = worker(engine, "one"), worker(engine, "two")
    taken = claim(one)
    assert sorted(job.id for job in taken) == [first, other]
    assert claim(two) == []  # Ada's second delivery waits for her first
    (ada,) = [job for job in taken if job.id == first]
    assert one.settle(ada, DONE, Progress()) is True
    assert [job.id for job in claim(two)] == [same_contact]


def test_no_account_takes_more_than_its_share_of_a_worker(engine):
    ids = queue(engine, endpoint(engine), *(f"c{i}@example.com" for i in range(5)))
    (acme,) = registry.list_accounts(engine)
    # Three at most for the account, one of them already running in this worker.
    jobs = worker(engine, "one").claim(16, {acme.id: 1}, 3)
    assert [job.id for job in jobs] == ids[:2]


def test_an_account_is_refilled_once_half_its_share_has_finished(engine):
    ids = queue(engine, endpoint(engine), *(f"c{i}@example.com" for i in range(12)))
    (acme,) = registry.list_accounts(engine)
    one = worker(engine, "one")
    # A share of 8: with 5 still running, nothing is claimed (one claim per delivery that
    # finished would hold the write lock the inbox needs, once per delivery).
    assert one.claim(16, {acme.id: 5}, 8) == []
    # With 4 running, one claim takes the other half at once.
    assert [job.id for job in one.claim(16, {acme.id: 4}, 8)] == ids[:4]


def test_a_held_account_is_passed_over_and_another_is_claimed(engine):
    queue(engine, endpoint(engine, "acme"), "a@example.com", "b@example.com")
    beta = queue(engine, endpoint(engine, "beta"), "a@example.com")
    acme_id = next(a.id for a in registry.list_accounts(engine) if a.name == "acme")
    with engine.begin() as conn:
        accounts.hold(conn, acme_id, 60.0)  # Loops answered 429 with a wait of a minute
    assert [job.id for job in claim(worker(engine, "one"))] == beta


def test_a_backlog_an_account_cannot_send_yet_never_hides_another_accounts_delivery(engine):
    # Acme's older backlog, larger than what one claim reads, waits: first at its share of
    # the worker, then held by a 429. Beta's one delivery goes all the same.
    queue(engine, endpoint(engine, "acme"), *(f"c{i}@example.com" for i in range(100)))
    beta_endpoint = endpoint(engine, "beta")
    acme_id = next(a.id for a in registry.list_accounts(engine) if a.name == "acme")
    one = worker(engine, "one")
    first, second = queue(engine, beta_endpoint, "first@example.com", "second@example.com")
    assert [job.id for job in one.claim(1, {acme_id: 8}, 8)] == [first]
    with engine.begin() as conn:
        accounts.hold(conn, acme_id, 60.0)
    assert [job.id for job in one.claim(1, {}, 8)] == [second]


# -- leases ---------------------------------------------------------------------------------


def test_a_live_claim_is_left_alone_and_a_lapsed_one_is_taken_up(engine):
    live, lapsed = queue(engine, endpoint(engine), "ada@example.com", "bob@example.com")
    assert [job.id for job in worker(engine, "alive").claim(1, {}, 8)] == [live]
    died = worker(engine, "died", lease=-1.0)  # a worker killed: its lease ran out
    assert [job.id for job in died.claim(1, {}, 8)] == [lapsed]
    assert [job.id for job in claim(worker(engine, "other"))] == [lapsed]


def test_a_worker_whose_claim_lapsed_cannot_record_over_the_one_that_holds_it(engine):
    (delivery,) = queue(engine, endpoint(engine), "ada@example.com")
    slow = worker(engine, "slow", lease=-1.0)  # its lease has lapsed by the time it answers
    (job,) = claim(slow)
    other = worker(engine, "other")
    (again,) = claim(other)
    assert again.id == job.id

    assert slow.settle(job, Settled(FAILED, "too late"), Progress()) is False
    assert tuple(row(engine, delivery)) == (QUEUED, "other", 0)
    assert other.settle(again, DONE, Progress()) is True
    assert tuple(row(engine, delivery)) == (DELIVERED, None, 1)


def test_renewing_keeps_a_claim_from_lapsing(engine):
    (delivery,) = queue(engine, endpoint(engine), "ada@example.com")
    busy = worker(engine, "busy", lease=-1.0)
    (job,) = claim(busy)
    # Renewed with a lease that has not run out, the claim is not taken up.
    Queue(engine, "busy", 30.0, 10).renew([job])
    assert claim(worker(engine, "other")) == []
    assert row(engine, delivery).claimed_by == "busy"


def test_renewing_a_probe_keeps_a_second_probe_from_starting_beside_it(engine):
    """An account whose key Loops refused is probed by one delivery at a time. A probe that
    outlasts its lease (a slow Stripe lookup) keeps the account held while it is renewed."""
    endpoint_id = endpoint(engine)
    queue(engine, endpoint_id, "ada@example.com", "bob@example.com")
    (account,) = registry.list_accounts(engine)
    with engine.begin() as conn:
        accounts.ensure(conn, account.id)
        accounts.record(
            conn, account.id, verdict=Verdict.KEY_REFUSED, message="Loops answered 401",
            api_key=account.api_key, current_key=lambda: account.api_key, was_probe=False,
            intervals=accounts.Intervals(key_probe=0.0),
        )  # fmt: skip
    probing = worker(engine, "probing", lease=-1.0)  # its lease, and the hold, run out
    (probe,) = claim(probing)
    assert probe.account_problem == "key"
    Queue(engine, "probing", 30.0, 10).renew([probe])
    assert claim(worker(engine, "other")) == []  # no second probe while the first runs
    with engine.begin() as conn:  # a 429 meanwhile holds the account for ten minutes
        accounts.hold(conn, account.id, 600.0)
        held = conn.execute(sa.text("SELECT held_until FROM account_states")).scalar_one()
    Queue(engine, "probing", 30.0, 10).renew([probe])
    with engine.connect() as conn:  # the probe's renewal does not cut that short
        assert conn.execute(sa.text("SELECT held_until FROM account_states")).scalar_one() == held


def test_shutdown_gives_back_every_claim_at_once(engine):
    ids = queue(engine, endpoint(engine), "a@example.com", "b@example.com")
    stopping, other = worker(engine, "stopping"), worker(engine, "other")
    assert len(claim(stopping)) == 2
    assert stopping.release_all() == 2
    assert sorted(job.id for job in claim(other)) == ids


# -- retention ------------------------------------------------------------------------------


def test_payloads_of_old_finished_deliveries_are_pruned_and_their_outcome_kept(engine):
    endpoint_id = endpoint(engine)
    old, new = time.time() - 40 * 86400, time.time()
    rows = [
        (DELIVERED, old), (IGNORED, old), (FAILED, old), (QUEUED, old), (DELIVERED, new),
    ]  # fmt: skip
    with engine.begin() as conn:
        for i, (status, received) in enumerate(rows):
            conn.execute(
                sa.insert(Delivery).values(
                    endpoint_id=endpoint_id,
                    event_id=f"evt_{i}",
                    event_type="invoice.paid",
                    occurred_at=0,
                    email="a@example.com",
                    payload=b"{}",
                    status=status,
                    reason="kept",
                    received_at=received,
                )
            )
    assert worker(engine, "pruner").prune_payloads(30, batch=1) == 2
    with engine.connect() as conn:
        kept = conn.execute(
            sa.select(Delivery.status, Delivery.payload, Delivery.reason).order_by(Delivery.id)
        ).all()
    assert [(s, p is not None) for s, p, _ in kept] == [
        (DELIVERED, False), (IGNORED, False), (FAILED, True), (QUEUED, True), (DELIVERED, True),
    ]  # fmt: skip
    assert {r for _, _, r in kept} == {"kept"}
