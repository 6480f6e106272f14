"""The ``loops-bridge`` command.

    loops-bridge serve | worker | sandbox [--port 8025]
    loops-bridge accounts add --name N --api-key KEY | list | set NAME | test NAME
                        | remove NAME --yes                        (alias: connections)
                        | loops-webhook NAME [add-secret|remove-secret SECRET|-]
    loops-bridge endpoints create ... | list | show ID | edit ID ... | pause ID | resume ID
                         | delete ID --yes | add-secret ID SECRET | remove-secret ID SECRET
                         | set-stripe-key ID KEY|- | remove-stripe-key ID
    loops-bridge backfill ID [--dry-run] | recover ID --since TIME   (Stripe's API)
    loops-bridge deliveries list [--status S] [--endpoint ID] [--limit N] | show ID | retry ID
                          | send-again ID --yes
    loops-bridge settings
    loops-bridge migrate | rotate-secret-key

``--json`` prints one JSON value on stdout, for scripts. Any command that uses the database
creates the schema on a fresh one, and refuses to run on one whose schema is older than this
version's until ``loops-bridge migrate`` has upgraded it. A secret given as ``-`` is read
from standard input, so it stays out of the shell history and the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

import providers
from bridge import (
    __version__,
    cli_stripe,
    db,
    logs,
    loops,
    outcomes,
    public_url,
    registry,
    vault,
)
from bridge.models import ID_RANGE, STATUSES, Delivery, Endpoint, LoopsCall, row_id
from bridge.settings import DECLARED, Settings, SettingsError, load

log = logging.getLogger("bridge")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loops-bridge", description="Stripe webhooks in, Loops contacts and events out."
    )
    parser.add_argument("--version", action="version", version=f"loops-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the web app and the delivery worker")
    serve.add_argument("--host", help="interface to listen on (default: BRIDGE_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default: BRIDGE_PORT)")
    worker = commands.add_parser("worker", help="run only the delivery worker")
    worker.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics at http://0.0.0.0:PORT/metrics"
    )
    sandbox = commands.add_parser("sandbox", help="run a local stand-in for the Loops API")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8025)
    sandbox.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="accept only this key (repeatable); by default any key is accepted",
    )
    sandbox.add_argument("--rate-limit", type=int, default=10, help="requests/second per key")
    sandbox.add_argument(
        "--loops-webhook-url",
        metavar="URL",
        help="post Loops' own webhooks here: the bridge's Loops webhook URL of the account",
    )
    sandbox.add_argument(
        "--loops-webhook-secret",
        metavar="whsec_...|-",
        help="sign them with this secret, as Loops does (- reads it from stdin)",
    )
    sandbox.add_argument(
        "--loop",
        action="append",
        dest="loops",
        default=[],
        metavar='EVENT="Loop name"',
        help="events/send with EVENT sends this loop's email (repeatable)",
    )
    sandbox.add_argument(
        "--contact-events",
        action="store_true",
        help="also post contact.created, and contact.unsubscribed + .deleted on a delete",
    )
    _json_flag(commands.add_parser("settings", help="list the settings and their current values"))
    commands.add_parser(
        "migrate", help="upgrade the database schema to this version's (back it up first)"
    )
    _json_flag(
        commands.add_parser(
            "rotate-secret-key",
            help="re-encrypt the stored API keys and signing secrets under a new key "
            "(stop serve and worker first)",
        )
    )

    # "connections" was the first name of this command: scripts still use it.
    accounts = commands.add_parser(
        "accounts", aliases=["connections"], help="Loops accounts (API keys)"
    )
    sub = accounts.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add a Loops account")
    add.add_argument("--name", required=True, help="a name for this Loops account")
    add.add_argument("--api-key", required=True, help="Loops API key, or - to type it unseen")
    _no_check_flag(add)
    _json_flag(add)
    _json_flag(sub.add_parser("list", help="list Loops accounts (keys masked)"))
    change = sub.add_parser("set", help="change a Loops account's rate limit or API key")
    change.add_argument("name", help="the Loops account's name")
    change.add_argument(
        "--rate-limit", help="requests per second, 1-1000, or 'default' (BRIDGE_LOOPS_RATE_LIMIT)"
    )
    change.add_argument(
        "--api-key",
        help="a new Loops API key, or - to type it unseen; its deliveries resume at once",
    )
    _no_check_flag(change)
    _json_flag(change)
    test = sub.add_parser("test", help="ask Loops whether the account's API key works")
    test.add_argument("name", help="the Loops account's name")
    _json_flag(test)
    remove = sub.add_parser("remove", help="remove a Loops account no endpoint uses")
    remove.add_argument("name", help="the Loops account's name")
    _yes_flag(remove, "remove it: what the bridge knows of its contacts goes too")
    _json_flag(remove)
    hook = sub.add_parser(
        "loops-webhook",
        help="the URL Loops posts its own webhooks to (Settings → Webhooks), and its secrets",
    )
    hook.add_argument("name", help="the Loops account's name")
    hook.add_argument(
        "secret_action",
        nargs="?",  # checked in _loops_webhook: argparse's choices would echo a secret
        metavar="add-secret|remove-secret",
        help="add or remove a signing secret (several may be active while one is rolled)",
    )
    hook.add_argument("secret", nargs="?", help="the whsec_... secret, or - to read stdin")
    _json_flag(hook)

    endpoints = commands.add_parser("endpoints", help="webhook endpoints")
    sub = endpoints.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create an endpoint and print its URL")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--account", "--connection", dest="account", required=True, help="name of the Loops account"
    )
    create.add_argument("--provider", default="stripe", choices=providers.names())
    create.add_argument("--events", required=True, help="comma-separated event types")
    create.add_argument("--user-group", help="userGroup given to contacts this creates")
    create.add_argument(
        "--loops-event", help="one Loops event for every accepted type, e.g. successfulPayment"
    )
    create.add_argument(
        "--loops-events",
        help="a Loops event per type: customer.created=newStripeCustomer,invoice.paid=...",
    )
    create.add_argument(
        "--mailing-lists", help="comma-separated Loops mailing-list ids new contacts join"
    )
    create.add_argument(
        "--on-delete",
        default="unsubscribe",
        help="what a deletion does in Loops: unsubscribe (default), delete or ignore",
    )
    create.add_argument(
        "--no-sync-names", action="store_true", help="never send first and last names"
    )
    create.add_argument(
        "--signing-secret",
        help="the provider's signing secret, or - to read stdin; left out for a provider "
        "whose secret the bridge makes (Supabase), one is made and shown once",
    )
    _json_flag(create)
    edit = sub.add_parser("edit", help="change an endpoint: only the options given change")
    edit.add_argument("id", help="endpoint id")
    edit.add_argument("--name")
    edit.add_argument("--account", help="name of the Loops account")
    edit.add_argument("--events", help="comma-separated event types")
    edit.add_argument("--user-group", help="userGroup for new contacts; '' for none")
    edit.add_argument("--loops-event", help="one Loops event for every type; '' for none")
    edit.add_argument("--loops-events", help="TYPE=EVENT,...; '' for none")
    edit.add_argument("--mailing-lists", help="comma-separated list ids; '' for none")
    edit.add_argument("--on-delete", help="unsubscribe, delete or ignore")
    edit.add_argument(
        "--sync-names", action=argparse.BooleanOptionalAction, help="send first and last names"
    )
    _json_flag(edit)
    _json_flag(sub.add_parser("list", help="list endpoints and their URLs"))
    for action, text in (
        ("show", "show an endpoint"),
        ("pause", "hold an endpoint's deliveries (webhooks are still taken and stored)"),
        ("resume", "let a paused endpoint's deliveries go again"),
        ("delete", "delete an endpoint with its secrets and delivery log"),
    ):
        one = sub.add_parser(action, help=text)
        one.add_argument("id", help="endpoint id")
        if action == "delete":
            _yes_flag(one, "delete it: its webhook URL stops working at once")
        _json_flag(one)
    for action, text in (("add-secret", "add"), ("remove-secret", "remove")):
        secret = sub.add_parser(action, help=f"{text} a signing secret (several may be active)")
        secret.add_argument("id", help="endpoint id")
        secret.add_argument("secret", help="the whsec_... secret, or - to read stdin")
        _json_flag(secret)
    cli_stripe.add_parsers(commands, sub, _json_flag, _no_check_flag)

    deliveries = commands.add_parser("deliveries", help="the delivery log")
    sub = deliveries.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="newest first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--endpoint", help="endpoint id")
    listing.add_argument(
        "--limit", type=_positive_int, default=50, help="the newest N deliveries (default: 50)"
    )
    _json_flag(listing)
    show = sub.add_parser("show", help="one delivery with every Loops call made for it")
    show.add_argument("id", type=_positive_int, help="delivery id")
    _json_flag(show)
    retry = sub.add_parser("retry", help="queue a failed or dead delivery again, now")
    retry.add_argument("id", type=_positive_int, help="delivery id")
    _json_flag(retry)
    again = sub.add_parser(
        "send-again", help="send a delivered event to Loops again, with a new idempotency key"
    )
    again.add_argument("id", type=_positive_int, help="delivery id")
    _yes_flag(again, "send it: Loops runs the event's workflow again")
    _json_flag(again)
    return parser


def _yes_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--yes", action="store_true", help=f"confirm: {what}")


def _confirmed(args: argparse.Namespace, what: str) -> None:
    if not args.yes:
        raise registry.Invalid(f"This would {what}. Add --yes to go ahead.")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON value")


def _no_check_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="save the key without asking Loops whether it takes it (offline set-up)",
    )


def _positive_int(text: str) -> int:
    """A delivery id or a --limit: a whole number from 1 to the largest id a database holds
    (:func:`bridge.models.row_id`). Anything else is refused before the database is asked:
    no row has such an id, and SQLite or PostgreSQL would fail on the number, not answer."""
    number = row_id(text)
    if not number:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a whole number from 1 to {ID_RANGE[-1]:,}"
        )
    return number


def _secret_arg(value: str) -> str:
    """A secret as given; for ``-``, typed unseen at a terminal, else stdin's first line."""
    if value != "-":
        return value
    if sys.stdin.isatty():
        return getpass.getpass("Paste it and press Enter (it is not shown): ")
    return sys.stdin.readline().strip()


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _when(epoch: float | None) -> str:
    """ISO 8601 in UTC, to the second (:func:`bridge.outcomes.iso`); "-" for none."""
    return outcomes.iso(epoch) if epoch else "-"


def _count(number: int, noun: str) -> str:
    """``1 queued delivery``, ``2 queued deliveries``."""
    if number == 1:
        return f"1 {noun}"
    return f"{number} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a reader gone is a traceback
        return code
    except BrokenPipeError:  # piped into head, which has read its fill: end quietly
        # Python would report the failure to flush stdout at exit: point it at nothing.
        # https://docs.python.org/3/library/signal.html#note-on-sigpipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load()
    except SettingsError as exc:
        logs.configure("text")  # BRIDGE_LOG_FORMAT may be the setting that is wrong
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format)
    try:
        if args.command == "sandbox":
            return _sandbox(args, settings)
        if args.command == "settings":
            return _settings(args, settings)
        if args.command == "migrate":
            return _migrate(settings)
        new_file = _new_sqlite_file(settings)
        engine = db.connect(settings.database_url, secret_key=settings.secret_key)
        if new_file:
            _tell(
                settings, f"Created the database {new_file} (BRIDGE_DATABASE_URL to use another)."
            )
        try:
            return _COMMANDS[args.command](args, settings, engine)
        finally:
            engine.dispose()  # its connections closed, whether main() ends the process or not
    except (registry.Invalid, SettingsError) as exc:
        return _fail(settings, str(exc), 2)
    except (db.SchemaError, vault.VaultError) as exc:
        return _fail(settings, str(exc), 1)
    except SQLAlchemyError as exc:
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        return _fail(settings, f"the database at {where} is not usable: {reason}", 1)


def _sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from bridge import sandbox

    url, secret = args.loops_webhook_url, args.loops_webhook_secret
    webhook = None
    if url or secret or args.loops or args.contact_events:
        if not (url and secret):
            message = "Loops webhooks need both --loops-webhook-url and --loops-webhook-secret."
            return _fail(settings, message, 2)
        secret = _secret_arg(secret)  # "-": typed unseen at a terminal, else stdin
        try:
            webhook = sandbox.LoopsWebhook.from_options(
                url, secret, args.loops, args.contact_events
            )
        except ValueError as exc:
            return _fail(settings, str(exc), 2)
    sandbox.serve(args.host, args.port, args.api_keys, args.rate_limit, loops_webhook=webhook)
    return 0


def _fail(settings: Settings, message: str, code: int) -> int:
    """Say why the command failed, on stderr: a plain line, or a log line in JSON."""
    _tell(settings, message, logging.ERROR)
    return code


def _tell(settings: Settings, message: str, level: int = logging.INFO) -> None:
    """``message`` on stderr, apart from the output: a plain line, or a log line in JSON."""
    if settings.log_format == "json":
        log.log(level, message)
    else:
        prefix = "error: " if level >= logging.ERROR else ""
        print(f"{prefix}{message}", file=sys.stderr)


def _new_sqlite_file(settings: Settings) -> str | None:
    """The SQLite file this command is about to create, if it is one that does not exist."""
    url = make_url(settings.database_url)
    path = url.database if url.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return None
    return os.path.abspath(path)


def _migrate(settings: Settings) -> int:
    engine = db.connect(settings.database_url, create_schema=False)
    try:
        before, after = db.upgrade(engine, settings.secret_key)
    finally:
        engine.dispose()
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    if before == after:
        print(f"The database at {where} is already up to date (schema revision {after}).")
    elif before is None:
        print(f"Created the schema of the database at {where}, at revision {after}.")
    else:
        print(f"Upgraded the database at {where} from schema revision {before} to {after}.")
    return 0


def _settings(args: argparse.Namespace, settings: Settings) -> int:
    rows = []
    for item in DECLARED:
        value = getattr(settings, item.env.removeprefix("BRIDGE_").lower())
        if item.env in ("BRIDGE_DATABASE_URL", "BRIDGE_SMTP_URL") and value:
            value = make_url(value).render_as_string(hide_password=True)
        elif item.env in ("BRIDGE_ADMIN_PASSWORD", "BRIDGE_SECRET_KEY", "BRIDGE_ALERT_WEBHOOK_URL"):
            value = "(set, not shown)" if value else "(unset)"
        rows.append({"name": item.env, "value": value, "help": item.help})
    _print(args, rows, "\n".join(f"{r['name']}={r['value']}\n    {r['help']}" for r in rows))
    return 0


def _serve(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    import uvicorn

    from bridge.app import create_apps
    from bridge.server import config

    # The admin answers to the host it is bound to: --host, not only BRIDGE_HOST.
    settings = replace(settings, host=args.host or settings.host, port=args.port or settings.port)
    host, port = settings.host, settings.port
    admin_port = int(settings.admin) if settings.admin.isdigit() else None
    if admin_port == port:
        raise SettingsError(
            f"BRIDGE_ADMIN={admin_port} is the port the webhooks are served on (BRIDGE_PORT "
            "or --port): give the admin a port of its own, or set BRIDGE_ADMIN=on"
        )
    apps = create_apps(settings, engine)
    servers = [uvicorn.Server(config(apps.public, settings, port))]
    if apps.admin and admin_port:
        # No lifespan: the inbox and the delivery worker run once, in the public app's.
        admin = config(apps.admin, settings, admin_port, lifespan="off")
        servers.append(uvicorn.Server(admin))
    # What exists now lives as long as the process: keep the collector from walking it
    # again and again, and collect the young generation less often. Under a burst of
    # webhooks, full collections otherwise stop every request for ~60 ms at a time.
    # https://docs.python.org/3/library/gc.html#gc.freeze
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)
    log.info("webhook URLs: %s/webhooks/<endpoint id>", settings.public_url.rstrip("/"))
    only_webhooks = f"port {port} serves only /webhooks/* and /healthz"
    if admin_port:
        log.info(
            "admin at http://%s:%d/admin, metrics at /metrics there (BRIDGE_ADMIN=%d); %s",
            host,
            admin_port,
            admin_port,
            only_webhooks,
        )
    elif settings.admin == "on":
        log.info("admin at http://%s:%d/admin, metrics at /metrics (BRIDGE_ADMIN=on)", host, port)
    else:
        log.info(
            "no admin, no /metrics (BRIDGE_ADMIN=off); %s. For metrics: BRIDGE_ADMIN=<port>, "
            "or loops-bridge worker --metrics-port <port>",
            only_webhooks,
        )
    if settings.trusted_proxies:
        log.info(
            "X-Forwarded-For and X-Forwarded-Proto believed only from %s (BRIDGE_TRUSTED_PROXIES)",
            settings.trusted_proxies,
        )

    async def serve(server: uvicorn.Server) -> None:
        try:
            await server.serve()
        except SystemExit:  # it could not start (a port in use...); uvicorn logged why
            pass
        finally:  # the process serves all of its ports or none
            for other in servers:
                other.should_exit = True

    async def run() -> None:
        # One process, one event loop. Each server catches SIGTERM and SIGINT while it runs
        # and, after its graceful shutdown, raises the signal again for the handler it had
        # replaced (uvicorn's cooperative signal handling): the admin's server, started last,
        # stops first, then the public one, whose lifespan stops the worker.
        await asyncio.gather(*(serve(server) for server in servers))

    try:  # the event loop uvicorn.run picks: uvloop, which uvicorn[standard] installs
        from uvloop import new_event_loop as new_loop
    except ImportError:
        new_loop = None  # type: ignore[assignment]
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(run())
    return 0 if all(server.started for server in servers) else 1


def _worker(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    from bridge.delivery import Worker

    if args.metrics_port:
        from bridge import metrics

        metrics.serve_http(args.metrics_port, engine)
        log.info("metrics at http://0.0.0.0:%d/metrics", args.metrics_port)

    async def run() -> None:
        worker = Worker(engine, settings)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()

    asyncio.run(run())
    return 0


def _checked_key(
    args: argparse.Namespace, settings: Settings, engine: Engine, key: str, but: int | None = None
) -> str:
    """``key``, once nothing is wrong with it and Loops took it (``GET /api-key``), unless
    ``--no-check``. Local mistakes are said first: they need no call to Loops."""
    if problem := registry.key_problem(engine, key, but):
        raise registry.Invalid(problem)
    if args.no_check:
        return key
    offline = "add --no-check to save it without checking (an offline set-up)"
    refusal = asyncio.run(loops.key_refusal(key.strip(), settings.loops_api_url, unchecked=offline))
    if refusal:
        raise registry.Invalid(refusal)
    return key


def _accounts(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    if args.action == "add":
        key = _secret_arg(args.api_key)
        if problems := registry.account_problems(engine, args.name, key):
            raise registry.Invalid(" ".join(problems.values()))
        key = _checked_key(args, settings, engine, key)
        account = registry.add_account(engine, args.name, key)
        data = {
            "id": account.id,
            "name": account.name,
            "api_key": registry.mask(account.api_key),
        }
        _print(
            args,
            data,
            f"Added Loops account {account.name!r} (key {registry.mask(account.api_key)}).",
        )
        return 0
    if args.action == "set":
        return _set_account(args, settings, engine)
    if args.action == "test":
        account = _account_named(engine, args.name)
        refusal = asyncio.run(
            loops.key_refusal(account.api_key, settings.loops_api_url, unchecked=None)
        )
        hint = registry.mask(account.api_key)
        data = {"name": account.name, "api_key": hint, "ok": refusal is None, "reason": refusal}
        _print(args, data, refusal or f"Loops takes the key of {account.name!r} ({hint}).")
        return 0 if refusal is None else 1
    if args.action == "loops-webhook":
        return _loops_webhook(args, settings, engine)
    if args.action == "remove":
        account = _account_named(engine, args.name)
        _confirmed(args, f"remove the Loops account {account.name!r}")
        name = registry.delete_account(engine, account.id)  # type: ignore[arg-type]
        _print(args, {"name": name, "removed": True}, f"Removed Loops account {name!r}.")
        return 0
    from bridge.admin.accounts import read_accounts  # as the admin reads them

    now = time.time()
    rows = [
        {
            "id": a.id,
            "name": a.name,
            "api_key": a.key_hint,
            "rate_limit": a.own_rate_limit,
            "state": a.state(now),
            "problem": a.problem if a.problem_kind else None,
            "since": outcomes.iso(a.problem_since) if a.problem_kind and a.problem_since else None,
            "held_until": outcomes.iso(a.held_until) if a.held_until else None,
            "queued": a.queued,
        }
        for a in read_accounts(engine)
    ]
    text = "\n".join(_account_line(r) for r in rows) or "No Loops accounts yet."
    _print(args, rows, text)
    return 0


def _account_line(row: dict) -> str:
    """``acme  key loops…1234  key refused since 2026-12-03T10:42:07Z: 401 …  12 queued``."""
    state = {
        "key": f"key refused since {row['since']}: {row['problem']}",
        "outage": f"Loops unreachable since {row['since']}: {row['problem']}",
        "held": f"rate-limited until {row['held_until']}",
    }.get(row["state"], "healthy")
    queued = f"{row['queued']:,} queued" if row["queued"] else "nothing queued"
    return f"{row['name']}\tkey {row['api_key']}\t{state}\t{queued}"


def _set_account(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    if args.rate_limit is None and args.api_key is None:
        raise registry.Invalid("Give --rate-limit, --api-key or both.")
    account = _account_named(engine, args.name)
    rate: Any = registry.KEEP
    if args.rate_limit is not None:
        text = "" if args.rate_limit.strip().lower() == "default" else args.rate_limit
        rate = registry.read_rate_limit(text, default="--rate-limit default")
    key = None
    if args.api_key is not None:
        key = _checked_key(args, settings, engine, _secret_arg(args.api_key), account.id)
    done = registry.update_account(engine, account.id, api_key=key, rate_limit=rate)  # type: ignore[arg-type]
    data = {
        "name": done.name,
        "api_key": done.key_hint,
        "rate_limit": done.rate_limit,
        "deliveries_resumed": done.made_due,
    }
    limit = f"{done.rate_limit}/s" if done.rate_limit else "the default (BRIDGE_LOOPS_RATE_LIMIT)"
    text = f"Loops account {done.name!r}: key {done.key_hint}, rate limit {limit}."
    if key is not None:
        text += f" {_count(done.made_due, 'queued delivery')} resume now."
    _print(args, data, text)
    return 0


def _loops_webhook(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    name = args.name
    if args.secret_action not in (None, "add-secret", "remove-secret"):
        raise registry.Invalid(  # never echoed: it may be the secret, given without its action
            f"Give add-secret or remove-secret before the secret: loops-bridge accounts "
            f"loops-webhook {name} add-secret - (then paste the secret)."
        )
    if args.secret_action:
        if args.secret is None:
            raise registry.Invalid(
                f"Give the secret: loops-bridge accounts loops-webhook {name} "
                f"{args.secret_action} whsec_... (or - to read it from stdin)."
            )
        secret = _secret_arg(args.secret)
        if args.secret_action == "add-secret":
            hint = registry.add_loops_webhook_secret(engine, name, secret)
            text = f"Added the Loops webhook secret {hint} to Loops account {name!r}."
        else:
            hint = registry.remove_loops_webhook_secret(engine, name, secret)
            text = f"Removed the Loops webhook secret {hint} from Loops account {name!r}."
        data = {
            "account": name,
            "secret": hint,
            "added" if args.secret_action == "add-secret" else "removed": True,
        }
        _print(args, data, text)
        return 0
    url = registry.loops_webhook_url(engine, settings, name)
    hints = [hint for _, hint in registry.loops_webhook_secrets(engine, name)]
    secrets = ", ".join(hints) or (
        f"none yet: copy it from Loops (Settings → Webhooks → signing secret), then "
        f"loops-bridge accounts loops-webhook {name} add-secret -"
    )
    lines = [
        url,
        "  In Loops, Settings → Webhooks: paste this URL as the endpoint, toggle the events "
        "to send, and copy the signing secret back into the bridge.",
        f"  signing secrets: {secrets}",
    ]
    refused = None
    if found := registry.loops_webhook_refused(engine, name):
        refused = {"at": outcomes.iso(found[0]), "reason": found[1]}
        lines.append(f"  last refused: {refused['at']}: {refused['reason']}")
    data = {"account": name, "url": url, "signing_secrets": hints, "last_refused": refused}
    _print(args, data, "\n".join(lines))
    return 0


def _account_named(engine: Engine, name: str) -> Any:
    for account in registry.list_accounts(engine):
        if account.name == name:
            return account
    raise registry.Invalid(f"No Loops account named {name!r}: see `loops-bridge accounts list`.")


def _endpoints(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    if args.action == "create":
        secret = _secret_arg(args.signing_secret) if args.signing_secret else None
        made = None
        if secret is None and args.provider in providers.names():
            secret = made = providers.get(args.provider).new_secret()
        endpoint_id = registry.create_endpoint(
            engine,
            name=args.name,
            account=args.account,
            provider=args.provider,
            event_types=args.events.split(","),
            user_group=args.user_group,
            loops_event=args.loops_event,
            sync_names=not args.no_sync_names,
            signing_secret=secret,
            loops_events=_mapping(args.loops_events),
            mailing_lists=[i.strip() for i in (args.mailing_lists or "").split(",") if i.strip()],
            on_delete=args.on_delete,
        )
        view = registry.endpoint_view(engine, endpoint_id)
        shown = view.as_dict(settings.endpoint_url(endpoint_id))
        shown["warnings"] = _unreachable(args.provider, settings, endpoint_id)
        for warning in shown["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        text = _describe(view, settings)
        if made:  # shown this once: only its hint is kept anywhere it can be read back
            shown["signing_secret"] = made
            text += (
                f"\n\nThe endpoint's secret, made for you and shown only this once:\n\n"
                f"    {made}\n\nPut it in the provider's request header now (see the README)."
            )
        _print(args, shown, text)
        return 0
    if args.action in ("add-secret", "remove-secret"):
        change = registry.add_secret if args.action == "add-secret" else registry.remove_secret
        hint = change(engine, args.id, _secret_arg(args.secret))
        verb = "Added" if args.action == "add-secret" else "Removed"
        _print(args, {"id": args.id, "secret": hint}, f"{verb} signing secret {hint}.")
        return 0
    if args.action in ("set-stripe-key", "remove-stripe-key"):
        key = _secret_arg(args.key) if args.action == "set-stripe-key" else ""
        return cli_stripe.set_key(args, settings, engine, key, _print)
    if args.action in ("show", "pause", "resume", "delete", "edit"):
        return _endpoint(args, settings, engine)
    views = registry.list_endpoints(engine)
    data = [v.as_dict(settings.endpoint_url(v.id)) for v in views]
    text = "\n\n".join(_describe(v, settings) for v in views) or "No endpoints yet."
    _print(args, data, text)
    return 0


def _endpoint(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    """show, pause, resume, delete or edit one endpoint."""
    view = registry.endpoint_view(engine, args.id)  # NotFound says what to do
    done = ""
    if args.action == "delete":
        _confirmed(args, f"delete the endpoint {view.name!r} and its delivery log")
        registry.delete_endpoint(engine, view.id)
        _print(args, {"id": view.id, "deleted": True}, f"Deleted endpoint {view.name!r}.")
        return 0
    if args.action in ("pause", "resume"):
        registry.set_paused(engine, view.id, args.action == "pause")
        done = (
            "Paused: webhooks are still taken and stored; their deliveries wait until "
            f"`loops-bridge endpoints resume {view.id}`."
            if args.action == "pause"
            else "Resumed: its queued deliveries go to Loops now."
        )
    if args.action == "edit":
        form = _edited(args, view)
        registry.update_endpoint(engine, view.id, form)
        done = "Saved."
        if dropped := sorted(set(view.loops_events) - set(form.loops_events or {})):
            if args.loops_events is None:  # they went with their event types
                listed = ", ".join(f"{t} → {view.loops_events[t]}" for t in dropped)
                done += f" The Loops events of the types it no longer accepts are gone: {listed}."
    view = registry.endpoint_view(engine, view.id)
    text = _describe(view, settings) + (f"\n\n{done}" if done else "")
    _print(args, view.as_dict(settings.endpoint_url(view.id)), text)
    return 0


def _edited(args: argparse.Namespace, view: registry.EndpointView) -> registry.EndpointForm:
    """The endpoint as it is, with the options given on the command line."""

    def given(option: str, current: Any) -> Any:
        value = getattr(args, option)
        return current if value is None else value

    event_types = [t.strip() for t in given("events", ",".join(view.event_types)).split(",")]
    per_type = view.loops_events if args.loops_events is None else _mapping(args.loops_events)
    if args.loops_events is None:  # a type no longer accepted takes its Loops event with it
        per_type = {t: name for t, name in per_type.items() if t in event_types}
    lists = given("mailing_lists", ",".join(view.mailing_lists))
    return registry.EndpointForm(
        name=given("name", view.name),
        account=given("account", view.account),
        provider=view.provider,
        event_types=event_types,
        user_group=given("user_group", view.user_group),
        loops_event=given("loops_event", view.loops_event),
        sync_names=given("sync_names", view.sync_names),
        loops_events=per_type,
        mailing_lists=[i.strip() for i in lists.split(",") if i.strip()],
        on_delete=given("on_delete", view.on_delete),
    )


def _unreachable(provider: str, settings: Settings, endpoint_id: str) -> list[str]:
    """Why the platform cannot send to the endpoint's URL, and what to do; [] if it can."""
    why = public_url.unreachable(settings.public_url)
    if why and provider == "stripe":  # Stripe's own way to test from a private machine
        why += (
            " To test from this machine meanwhile: stripe listen --forward-to "
            f"{settings.endpoint_url(endpoint_id)}"
        )
    return [why] if why else []


def _describe(view: registry.EndpointView, settings: Settings) -> str:
    secrets = ", ".join(view.secret_hints) or (
        "none yet: waiting for the signing secret "
        f"(loops-bridge endpoints add-secret {view.id} whsec_...)"
    )
    state = (
        "paused: webhooks are taken and stored, nothing is sent to Loops until "
        f"`loops-bridge endpoints resume {view.id}`"
        if view.paused
        else "active"
    )
    return "\n".join(
        [
            f"{view.name}  [{view.provider} → Loops account {view.account}]"
            + ("  PAUSED" if view.paused else ""),
            f"  id:             {view.id}",
            f"  state:          {state}",
            f"  URL:            {settings.endpoint_url(view.id)}",
            f"  events:         {', '.join(view.event_types)}",
            f"  user group:     {view.user_group or '-'}",
            f"  Loops events:   {_events_text(view)}",
            f"  mailing lists:  {', '.join(view.mailing_lists) or '-'}",
            f"  on delete:      {view.on_delete}",
            f"  names synced:   {'yes' if view.sync_names else 'no'}",
            f"  signing secret: {secrets}",
            *([f"  Stripe API key: {view.stripe_key_hint}"] if view.stripe_key_hint else []),
        ]
    )


def _events_text(view: registry.EndpointView) -> str:
    if view.loops_events:
        return ", ".join(f"{t} → {e}" for t, e in view.loops_events.items())
    if view.loops_event:
        return f"{view.loops_event} for every event type"
    return "- (contacts only)"


def _mapping(text: str | None) -> dict[str, str]:
    """``TYPE=EVENT,TYPE=EVENT`` as a person types it."""
    mapping: dict[str, str] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        event_type, sep, event = pair.partition("=")
        if not sep or not event_type.strip() or not event.strip():
            raise registry.Invalid(
                f"--loops-events takes TYPE=EVENT pairs separated by commas, e.g. "
                f"customer.created=newStripeCustomer; {pair.strip()[:60]!r} is not one."
            )
        mapping[event_type.strip()] = event.strip()
    return mapping


def _event(payload: bytes | None) -> Any:
    """The stored event as JSON (None once retention deleted it)."""
    if payload is None:
        return None
    try:
        return json.loads(payload)
    except ValueError:  # stored before the provider read it strictly
        return payload.decode("utf-8", "replace")


def _delivery_dict(d: Delivery, endpoint_name: str) -> dict:
    return {
        "id": d.id,
        "endpoint_id": d.endpoint_id,
        "endpoint": endpoint_name,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "email": d.email,
        "user_id": d.user_id,
        "status": d.status,
        "reason": d.reason,
        "attempts": d.attempts,
        "received_at": d.received_at,
        "finished_at": d.finished_at,
        "next_attempt_at": d.next_attempt_at,
    }


def _deliveries(args: argparse.Namespace, _: Settings, engine: Engine) -> int:
    if args.action in ("retry", "send-again"):
        if args.action == "retry":
            registry.retry_delivery(engine, args.id)
            done = f"Delivery {args.id} is queued again, with a fresh max age of tries."
        else:
            _confirmed(args, f"send delivery {args.id} to Loops again and run its workflow again")
            registry.send_again(engine, args.id)
            done = f"Delivery {args.id} is queued to be sent again, with a new idempotency key."
        _print(args, {"id": args.id, "status": "queued"}, done)
        return 0
    with Session(engine) as session:
        names = dict(session.exec(select(Endpoint.id, Endpoint.name)).all())
        if args.action == "show":
            delivery = session.get(Delivery, args.id)
            if delivery is None:
                raise registry.Invalid(f"No delivery {args.id}; see loops-bridge deliveries list.")
            calls = session.exec(
                select(LoopsCall).where(LoopsCall.delivery_id == args.id).order_by(LoopsCall.id)
            ).all()
            data = _delivery_dict(delivery, names.get(delivery.endpoint_id, "?"))
            data["earlier_outcomes"] = (delivery.earlier_outcomes or "").splitlines()
            data["event"] = _event(delivery.payload)
            data["loops_calls"] = [
                {
                    "method": c.method,
                    "path": c.path,
                    "request": c.request_body,
                    "status_code": c.status_code,
                    "response": c.response_body,
                    "at": c.started_at,
                    "duration_ms": round(c.duration_ms, 1),
                }
                for c in calls
            ]
            data["loops_events"] = outcomes.for_delivery(engine, args.id)
            hidden = ("loops_calls", "event", "loops_events")
            shown = {k: v for k, v in data.items() if k not in hidden}
            for key in ("received_at", "finished_at", "next_attempt_at"):
                shown[key] = _when(shown[key])
            shown["earlier_outcomes"] = "; ".join(shown["earlier_outcomes"]) or "-"
            lines = [f"{k}: {v if v is not None else '-'}" for k, v in shown.items()]
            lines.append(
                "\nevent, as received:\n" + json.dumps(data["event"], indent=2, ensure_ascii=False)
                if data["event"] is not None
                else "\nevent: deleted after BRIDGE_RETENTION_DAYS (its outcome and calls stay)"
            )
            for c in data["loops_calls"]:
                lines.append(
                    f"\n{_when(c['at'])}  {c['method']} {c['path']} -> "
                    f"{c['status_code'] or 'no answer'} in {c['duration_ms']} ms"
                    f"\n  sent:     {c['request']}\n  answered: {c['response']}"
                )
            if data["loops_events"]:
                lines.append("\nwhat Loops reported after it:")
                lines += [
                    f"  {e['time']}  {e['event']}" + (f"  {e['subject']!r}" if e["subject"] else "")
                    for e in data["loops_events"]
                ]
            _print(args, data, "\n".join(lines))
            return 0
        query = select(Delivery).order_by(Delivery.id.desc()).limit(args.limit)  # type: ignore[union-attr]
        if args.status:
            query = query.where(Delivery.status == args.status)
        if args.endpoint:
            registry.endpoint_view(engine, args.endpoint)  # an unknown id is said, not "none"
            query = query.where(Delivery.endpoint_id == args.endpoint)
        rows = [_delivery_dict(d, names.get(d.endpoint_id, "?")) for d in session.exec(query)]
    text = "\n".join(
        f"{r['id']:>6}  {_when(r['received_at'])}  {r['status']:<9}  {r['event_type']:<24}  "
        f"{r['email'] or '-':<28}  {r['reason'] or ''}"
        for r in rows
    )
    if not rows:  # "yet" only when there are none at all, not none of those asked for
        which = f"{args.status} deliveries" if args.status else "deliveries"
        text = f"No {which} for endpoint {args.endpoint}." if args.endpoint else f"No {which}."
        text = "No deliveries yet." if text == "No deliveries." else text
    _print(args, rows, text)
    return 0


def _rotate_secret_key(args: argparse.Namespace, _: Settings, engine: Engine) -> int:
    key = vault.new_key()
    if vault.of(engine).path is not None:
        done = vault.rotate(engine, key)
        data = _rotated_dict(done)
        text = (
            f"Re-encrypted {_counted(done)} under a new key, now in {data['key_file']}. The "
            f"previous key is kept in {data['old_key_file']}: a backup of the database made "
            "before now needs it. Back up the new key with the database. A serve or worker "
            "running with this key file takes the new key up by itself; one with its own copy "
            "of the file, elsewhere, needs this file and a restart."
        )
        _print(args, data, text)
        return 0

    shown = []

    def show(done: vault.Rotated) -> None:  # before the commit: the key cannot get lost
        text = (
            f"Re-encrypted {_counted(done)} under a new key. It is shown this once and the "
            f"bridge stores it nowhere:\n\n    {key}\n\nSet BRIDGE_SECRET_KEY to it wherever "
            "serve and worker run, keep a copy with the database backups, and start them "
            "again. A backup of the database made before now needs the previous key. While "
            "processes change over, BRIDGE_SECRET_KEY=NEW,OLD works too: the first key "
            "encrypts, either opens."
        )
        _print(args, {**_rotated_dict(done), "secret_key": key}, text)
        sys.stdout.flush()
        shown.append(True)

    try:
        vault.rotate(engine, key, before_commit=show)
    except Exception:
        if shown:
            print(
                "The database was not changed: keep BRIDGE_SECRET_KEY as it is, and forget "
                "the key shown above.",
                file=sys.stderr,
            )
        raise
    return 0


def _counted(done: vault.Rotated) -> str:
    return (
        f"{done.accounts} Loops API key(s), {done.secrets} signing secret(s), "
        f"{done.stripe_keys} Stripe API key(s) and {done.loops_webhook_secrets} Loops "
        "webhook secret(s)"
    )


def _rotated_dict(done: vault.Rotated) -> dict:
    return {
        "api_keys": done.accounts,
        "signing_secrets": done.secrets,
        "stripe_api_keys": done.stripe_keys,
        "loops_webhook_secrets": done.loops_webhook_secrets,
        "key_file": str(done.key_file.absolute()) if done.key_file else None,
        "old_key_file": str(done.old_key_file.absolute()) if done.old_key_file else None,
    }


_COMMANDS = {
    "serve": _serve,
    "worker": _worker,
    "accounts": _accounts,
    "connections": _accounts,
    "endpoints": _endpoints,
    "deliveries": _deliveries,
    "rotate-secret-key": _rotate_secret_key,
    "backfill": lambda args, settings, engine: cli_stripe.run_backfill(
        args, settings, engine, _print
    ),
    "recover": lambda args, settings, engine: cli_stripe.run_recover(
        args, settings, engine, _print
    ),
}

if __name__ == "__main__":
    sys.exit(main())
