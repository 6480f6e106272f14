"""bridge/accounts.py: each Loops account's state machine (healthy, rate-limited, outage and
probing, key refused and probing) and its pace, on SQLite and PostgreSQL; the pure rules
(:func:`next_probe`, :func:`rate_in_use`) alone; and a structural guard that no other
module writes ``account_states``."""

from __future__ import annotations

import ast
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bridge import accounts, db, registry, vault
from bridge.accounts import KEY, OUTAGE, Intervals, next_probe, rate_in_use
from bridge.loops import Verdict
from bridge.models import DELIVERED, QUEUED, AccountState, Delivery

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "loops_key_acme_00001234"
NEW_KEY = "loops_key_acme_99995678"
SIGNING_SECRET = "whsec_accountsTestSecretAAAAAAAAAAA"
INTERVALS = Intervals(key_probe=30.0, outage_probe_max=20.0)

NO_PROBLEM = [Verdict.DONE, Verdict.ALREADY, Verdict.GIVE_UP, Verdict.RETRY_AFTER]


# --- the pure rules -------------------------------------------------------------------------


@pytest.mark.parametrize("failures", [1, 2, 7])
def test_a_refused_key_is_probed_every_key_interval(failures: int) -> None:
    assert next_probe(Verdict.KEY_REFUSED, failures, INTERVALS) == (KEY, 30.0)
    assert next_probe(Verdict.KEY_REFUSED, failures, Intervals(key_probe=0.2)) == (KEY, 0.2)


def test_an_outage_is_probed_after_1_2_4_seconds_up_to_the_maximum() -> None:
    def no_jitter(low: float, high: float) -> float:
        return high

    waits = [next_probe(Verdict.HOLD, n, INTERVALS, no_jitter) for n in range(1, 9)]
    assert waits == [(OUTAGE, w) for w in (1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0, 20.0)]
    capped = Intervals(outage_probe_max=3.0)
    assert [next_probe(Verdict.HOLD, n, capped, no_jitter) for n in (1, 2, 3, 9)] == [
        (OUTAGE, 1.0),
        (OUTAGE, 2.0),
        (OUTAGE, 3.0),
        (OUTAGE, 3.0),
    ]


def test_the_jitter_spreads_probes_over_the_last_fifth_of_the_wait() -> None:
    asked: list[tuple[float, float]] = []

    def lowest(low: float, high: float) -> float:
        asked.append((low, high))
        return low

    assert next_probe(Verdict.HOLD, 3, INTERVALS, lowest) == (OUTAGE, pytest.approx(3.2))
    assert asked == [(0.8, 1.0)]
    spread = random.Random(9)
    waits = [next_probe(Verdict.HOLD, 6, INTERVALS, spread.uniform) for _ in range(200)]
    assert all(kind == OUTAGE and 16.0 <= wait <= 20.0 for kind, wait in waits)  # type: ignore[misc]
    assert len({wait for _, wait in waits}) > 100  # type: ignore[misc]


@pytest.mark.parametrize("verdict", NO_PROBLEM, ids=lambda v: v.name)
def test_answers_that_show_no_problem_schedule_no_probe(verdict: Verdict) -> None:
    assert next_probe(verdict, 1, INTERVALS) is None
    assert next_probe(verdict, 5, INTERVALS) is None


@pytest.mark.parametrize(
    ("own", "default", "reported", "used"),
    [
        (None, 10, None, 10),  # the default (BRIDGE_LOOPS_RATE_LIMIT)
        (25, 10, None, 25),  # the account's own limit
        (5, 10, None, 5),
        (None, 10, 4, 4),  # Loops reports less than the default: Loops wins
        (25, 10, 20, 20),  # ... less than the account's own
        (25, 10, 40, 25),  # Loops reports more: the configured limit stays
        (None, 10, 100, 10),
    ],
)
def test_rate_in_use(own: int | None, default: int, reported: int | None, used: int) -> None:
    assert rate_in_use(own, default, reported) == used


# --- the state machine, on a real database ------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bridge.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    connected = db.connect(url, secret_key=vault.new_key())
    yield connected
    connected.dispose()


def add_account(engine: Engine, name: str = "acme", api_key: str = API_KEY) -> tuple[int, str]:
    """A Loops account with one Stripe endpoint: (the account's id, the endpoint's id)."""
    account = registry.add_account(engine, name, api_key)
    assert account.id is not None
    endpoint = registry.create_endpoint(
        engine,
        name=name,
        account=name,
        provider="stripe",
        event_types=["invoice.paid"],
        signing_secret=SIGNING_SECRET,
    )
    return account.id, endpoint


def add_delivery(
    engine: Engine, endpoint: str, next_attempt_in: float, status: str = QUEUED
) -> int:
    """A delivery whose next try is ``next_attempt_in`` seconds from the database's now."""
    at = database_now(engine)
    with Session(engine) as session:
        delivery = Delivery(
            endpoint_id=endpoint,
            event_id=f"evt_{time.perf_counter_ns()}",
            event_type="invoice.paid",
            occurred_at=int(at),
            email="ada@example.com",
            status=status,
            received_at=at,
            queued_at=at,
            next_attempt_at=at + next_attempt_in,
        )
        session.add(delivery)
        session.commit()
        assert delivery.id is not None
        return delivery.id


def database_now(engine: Engine) -> float:
    with engine.connect() as conn:
        return conn.execute(sa.select(db.now(engine.dialect.name))).scalar_one()


def state(engine: Engine, account_id: int) -> dict | None:
    """The account's row of account_states; None when it has none."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(AccountState.__table__).where(  # type: ignore[attr-defined]
                AccountState.account_id == account_id
            )
        ).first()
    return None if row is None else dict(row._mapping)


def due_in(engine: Engine, delivery_id: int) -> float:
    """Seconds until the delivery's next try, by the database's clock (<= 0: due)."""
    with engine.connect() as conn:
        next_try = conn.execute(
            sa.select(Delivery.next_attempt_at).where(Delivery.id == delivery_id)
        ).scalar_one()
    return next_try - database_now(engine)


def record(
    engine: Engine,
    account_id: int,
    verdict: Verdict | None,
    *,
    message: str = "",
    was_probe: bool = False,
    api_key: str = API_KEY,
    current_key: str = API_KEY,
    intervals: Intervals = INTERVALS,
) -> tuple[float, float]:
    """``accounts.record`` in a transaction of its own; the database's time just before and
    just after it."""
    before = database_now(engine)
    with engine.begin() as conn:
        accounts.record(
            conn,
            account_id,
            verdict=verdict,
            message=message,
            api_key=api_key,
            current_key=lambda: current_key,
            was_probe=was_probe,
            intervals=intervals,
        )
    return before, database_now(engine)


def test_an_outage_holds_the_account_longer_each_time_until_a_probe_gets_through(
    engine: Engine,
) -> None:
    account, endpoint = add_account(engine)
    other_account, other_endpoint = add_account(engine, "beta", "loops_key_beta_00005678")
    later = [add_delivery(engine, endpoint, 600), add_delivery(engine, endpoint, 3600)]
    already_due = add_delivery(engine, endpoint, -3600)
    finished = add_delivery(engine, endpoint, 600, status=DELIVERED)
    not_its = add_delivery(engine, other_endpoint, 600)
    assert state(engine, account) is None  # healthy: no row yet

    outage = "Loops did not answer: timed out"
    before, after = record(engine, account, Verdict.HOLD, message=outage)
    first = state(engine, account)
    assert first is not None
    assert (first["problem_kind"], first["problem"], first["failures"]) == (OUTAGE, outage, 1)
    assert before <= first["problem_since"] <= after
    assert before + 0.8 <= first["held_until"] <= after + 1.0  # 1 s, jittered

    before, after = record(
        engine, account, Verdict.HOLD, message="Loops answered 503", was_probe=True
    )
    second = state(engine, account)
    assert second is not None
    assert (second["problem_kind"], second["failures"]) == (OUTAGE, 2)
    assert second["problem"] == "Loops answered 503"
    assert second["problem_since"] == first["problem_since"]  # the outage began then
    assert before + 1.6 <= second["held_until"] <= after + 2.0  # 2 s, jittered

    for failures, wait in [(3, 4.0), (4, 8.0), (5, 16.0), (6, 20.0), (7, 20.0)]:
        before, after = record(engine, account, Verdict.HOLD, message=outage, was_probe=True)
        held = state(engine, account)
        assert held is not None and held["failures"] == failures
        assert before + 0.8 * wait <= held["held_until"] <= after + wait
    assert state(engine, other_account) is None
    assert due_in(engine, later[0]) > 500

    record(engine, account, Verdict.DONE, message="OK", was_probe=True)
    healthy = state(engine, account)
    assert healthy is not None
    assert (healthy["problem_kind"], healthy["problem"], healthy["problem_since"]) == (
        None,
        None,
        None,
    )
    assert (healthy["failures"], healthy["held_until"]) == (0, None)
    assert all(due_in(engine, d) <= 0 for d in later)  # its queued deliveries resume now
    assert due_in(engine, already_due) < -3000  # one already due keeps its place
    assert due_in(engine, finished) > 500 and due_in(engine, not_its) > 500


@pytest.mark.parametrize("verdict", [Verdict.ALREADY, Verdict.GIVE_UP, Verdict.RETRY_AFTER])
def test_any_answer_from_loops_to_a_probe_ends_the_problem(
    engine: Engine, verdict: Verdict
) -> None:
    account, endpoint = add_account(engine)
    queued = add_delivery(engine, endpoint, 600)
    record(engine, account, Verdict.KEY_REFUSED, message="Loops answered 401: Invalid API key")
    record(engine, account, verdict, message="Loops answered", was_probe=True)
    healthy = state(engine, account)
    assert healthy is not None
    assert (healthy["problem_kind"], healthy["problem"], healthy["failures"]) == (None, None, 0)
    assert due_in(engine, queued) <= 0


@pytest.mark.parametrize("verdict", [*NO_PROBLEM, None], ids=lambda v: getattr(v, "name", "none"))
def test_an_attempt_that_shows_no_problem_leaves_a_healthy_account_alone(
    engine: Engine, verdict: Verdict | None
) -> None:
    account, endpoint = add_account(engine)
    queued = add_delivery(engine, endpoint, 600)
    record(engine, account, verdict, message="whatever")
    assert state(engine, account) is None
    assert due_in(engine, queued) > 500


def test_a_refused_key_holds_the_account_for_the_key_interval(engine: Engine) -> None:
    account, endpoint = add_account(engine)
    queued = add_delivery(engine, endpoint, 600)
    refused = "Loops answered 401: Invalid API key"
    before, after = record(engine, account, Verdict.KEY_REFUSED, message=refused)
    held = state(engine, account)
    assert held is not None
    assert (held["problem_kind"], held["problem"], held["failures"]) == (KEY, refused, 1)
    assert before + 30.0 <= held["held_until"] <= after + 30.0
    assert before <= held["problem_since"] <= after

    before, after = record(engine, account, Verdict.KEY_REFUSED, message=refused, was_probe=True)
    again = state(engine, account)
    assert again is not None and again["failures"] == 2
    assert before + 30.0 <= again["held_until"] <= after + 30.0  # no backoff for a key
    assert again["problem_since"] == held["problem_since"]
    assert due_in(engine, queued) > 500  # its deliveries wait for the probe's answer


@pytest.mark.parametrize("verdict", [Verdict.KEY_REFUSED, Verdict.HOLD])
def test_an_answer_through_a_key_replaced_meanwhile_changes_nothing(
    engine: Engine, verdict: Verdict
) -> None:
    account, _ = add_account(engine)
    record(engine, account, verdict, message="old key", api_key=API_KEY, current_key=NEW_KEY)
    assert state(engine, account) is None

    with engine.begin() as conn:
        accounts.note_limit(conn, account, 10)
    kept = state(engine, account)
    record(engine, account, verdict, message="old key", api_key=API_KEY, current_key=NEW_KEY)
    assert state(engine, account) == kept


def test_a_replaced_key_clears_the_problem_and_makes_queued_deliveries_due(
    engine: Engine,
) -> None:
    account, endpoint = add_account(engine)
    _, other_endpoint = add_account(engine, "beta", "loops_key_beta_00005678")
    queued = [add_delivery(engine, endpoint, 30), add_delivery(engine, endpoint, 7200)]
    due_already = add_delivery(engine, endpoint, -3600)
    finished = add_delivery(engine, endpoint, 600, status=DELIVERED)
    not_its = add_delivery(engine, other_endpoint, 600)
    record(engine, account, Verdict.KEY_REFUSED, message="Loops answered 401: Invalid API key")
    record(engine, account, Verdict.KEY_REFUSED, message="Loops answered 401", was_probe=True)

    with engine.begin() as conn:
        made_due = accounts.key_replaced(conn, account)
    assert made_due == 3  # every queued delivery of the account is due now
    healthy = state(engine, account)
    assert healthy is not None
    assert (healthy["problem_kind"], healthy["problem"], healthy["failures"]) == (None, None, 0)
    assert healthy["held_until"] is None and healthy["problem_since"] is None
    assert all(due_in(engine, d) <= 0 for d in queued)
    assert due_in(engine, due_already) < -3000
    assert due_in(engine, finished) > 500 and due_in(engine, not_its) > 500

    # Through the registry, as `loops-bridge accounts set --api-key` and the admin do it.
    record(engine, account, Verdict.KEY_REFUSED, message="Loops answered 401: Invalid API key")
    done = registry.update_account(engine, account, api_key=NEW_KEY)
    assert done.made_due == 3
    replaced = state(engine, account)
    assert replaced is not None and replaced["problem_kind"] is None


def test_a_key_replaced_on_an_account_with_no_state_makes_its_queue_due(engine: Engine) -> None:
    account, endpoint = add_account(engine)
    queued = add_delivery(engine, endpoint, 600)
    with engine.begin() as conn:
        assert accounts.key_replaced(conn, account) == 1
    assert due_in(engine, queued) <= 0


def test_a_429_holds_the_account_and_never_shortens_a_longer_hold(engine: Engine) -> None:
    account, _ = add_account(engine)

    def hold(seconds: float) -> tuple[float, float, dict]:
        before = database_now(engine)
        with engine.begin() as conn:
            accounts.hold(conn, account, seconds)
        after = database_now(engine)
        row = state(engine, account)
        assert row is not None
        return before, after, row

    before, after, held = hold(5.0)  # the row is made on first use
    assert before + 5.0 <= held["held_until"] <= after + 5.0
    assert held["next_slot"] == pytest.approx(held["held_until"], abs=1e-3)
    assert held["problem_kind"] is None  # rate-limited is not a problem

    _, _, shorter = hold(1.0)
    assert (shorter["held_until"], shorter["next_slot"]) == (held["held_until"], held["next_slot"])

    before, after, longer = hold(60.0)
    assert before + 60.0 <= longer["held_until"] <= after + 60.0
    assert longer["next_slot"] == pytest.approx(longer["held_until"], abs=1e-3)

    # Slots reserved further ahead than the hold stay where they are.
    with engine.begin() as conn:
        accounts.reserve(conn, account, 1000, 1.0, 0.05)
    far = state(engine, account)
    assert far is not None
    _, _, after_slots = hold(90.0)
    assert after_slots["next_slot"] == far["next_slot"]
    assert after_slots["held_until"] > longer["held_until"]


def test_a_429_does_not_shorten_an_outage_hold(engine: Engine) -> None:
    account, _ = add_account(engine)
    record(engine, account, Verdict.KEY_REFUSED, message="Loops answered 401")
    refused = state(engine, account)
    assert refused is not None
    with engine.begin() as conn:
        accounts.hold(conn, account, 1.0)
    held = state(engine, account)
    assert held is not None
    assert held["held_until"] == refused["held_until"]
    assert held["problem_kind"] == KEY


def test_reserve_hands_out_consecutive_slots_interval_apart(engine: Engine) -> None:
    account, _ = add_account(engine)
    with engine.begin() as conn:
        accounts.ensure(conn, account)
        first, now = accounts.reserve(conn, account, 3, 0.5, 0.05)
    # A fresh account: from now + lead (PostgreSQL reads its clock again for RETURNING).
    assert first == pytest.approx(now + 0.05, abs=1e-3)
    row = state(engine, account)
    assert row is not None and row["next_slot"] == pytest.approx(first + 1.5)

    with engine.begin() as conn:
        second, _ = accounts.reserve(conn, account, 2, 0.5, 0.05)
        third, _ = accounts.reserve(conn, account, 1, 0.25, 0.05)
    assert second == pytest.approx(first + 1.5)  # right after the slots already taken
    assert third == pytest.approx(second + 1.0)
    row = state(engine, account)
    assert row is not None and row["next_slot"] == pytest.approx(third + 0.25)


def test_reserve_starts_at_least_lead_from_now_and_never_before_the_next_slot(
    engine: Engine,
) -> None:
    account, _ = add_account(engine)
    with engine.begin() as conn:
        accounts.ensure(conn, account)
        accounts.reserve(conn, account, 1, 0.1, 0.05)
    # Long past slots do not let a burst through: the next one is at least lead ahead.
    with engine.begin() as conn:
        conn.execute(sa.update(AccountState).values(next_slot=0.0))
    with engine.begin() as conn:
        first, now = accounts.reserve(conn, account, 2, 0.1, 2.0)
    assert first == pytest.approx(now + 2.0, abs=1e-3)

    with engine.begin() as conn:
        accounts.hold(conn, account, 30.0)
    held = state(engine, account)
    assert held is not None
    with engine.begin() as conn:
        after_hold, now = accounts.reserve(conn, account, 1, 0.1, 0.05)
    assert after_hold == pytest.approx(held["next_slot"])
    assert after_hold >= now + 29.0


def test_each_account_has_its_own_slots(engine: Engine) -> None:
    acme, _ = add_account(engine)
    beta, _ = add_account(engine, "beta", "loops_key_beta_00005678")
    with engine.begin() as conn:
        accounts.ensure(conn, acme)
        accounts.ensure(conn, beta)
        accounts.reserve(conn, acme, 100, 1.0, 0.05)
        beta_first, now = accounts.reserve(conn, beta, 1, 1.0, 0.05)
    assert beta_first <= now + 0.05 + 0.001


def test_the_limit_loops_reports_is_kept_and_ensure_keeps_the_state(engine: Engine) -> None:
    account, _ = add_account(engine)
    with engine.begin() as conn:
        accounts.note_limit(conn, account, 25)  # the row is made on first use
    row = state(engine, account)
    assert row is not None and row["loops_limit"] == 25
    with engine.begin() as conn:
        accounts.note_limit(conn, account, 4)
        accounts.ensure(conn, account)  # a second ensure changes nothing
    row = state(engine, account)
    assert row is not None
    assert (row["loops_limit"], row["problem_kind"], row["failures"]) == (4, None, 0)


def test_claiming_the_probe_holds_the_account_for_the_lease(engine: Engine) -> None:
    account, _ = add_account(engine)
    record(engine, account, Verdict.HOLD, message="Loops answered 502")
    with engine.begin() as conn:
        accounts.claim_probe(conn, account, 1000.0, 45.0)
    row = state(engine, account)
    assert row is not None
    assert (row["held_until"], row["problem_kind"], row["failures"]) == (1045.0, OUTAGE, 1)


def test_forget_removes_the_state_and_a_new_one_starts_healthy(engine: Engine) -> None:
    account, _ = add_account(engine)
    record(engine, account, Verdict.KEY_REFUSED, message="Loops answered 401")
    with engine.begin() as conn:
        accounts.note_limit(conn, account, 5)
        accounts.forget(conn, account)
    assert state(engine, account) is None
    with engine.begin() as conn:
        accounts.forget(conn, account)  # nothing left to forget: no error
        accounts.ensure(conn, account)
    fresh = state(engine, account)
    assert fresh is not None
    assert (fresh["problem_kind"], fresh["failures"], fresh["loops_limit"]) == (None, 0, None)
    assert (fresh["held_until"], fresh["next_slot"]) == (None, 0.0)


def test_the_first_probe_of_an_outage_comes_after_one_second(engine: Engine) -> None:
    """The docstring's promise ("outage: held, probed after 1 s, 2 s, 4 s ... 20 s";
    models.AccountState.failures: "probes failed in a row"), when the several deliveries
    a worker runs at once for the account all fail as the outage begins."""
    account, _ = add_account(engine)
    record(engine, account, Verdict.HOLD, message="Loops answered 503")
    for _ in range(5):  # the other deliveries in flight, none of them the probe
        _, after = record(engine, account, Verdict.HOLD, message="Loops answered 503")
    held = state(engine, account)
    assert held is not None
    assert held["held_until"] <= after + 1.0


def test_a_probe_answered_429_ends_the_problem_but_the_wait_holds(engine: Engine) -> None:
    """As the worker does it: the probe is claimed, Loops answers 429 (accounts.hold, from
    bridge.pacing), then the attempt is recorded. bridge/pacing.py: "no delivery for it is
    claimed until then (held_until)"."""
    account, _ = add_account(engine)
    record(engine, account, Verdict.KEY_REFUSED, message="Loops answered 401")
    before = database_now(engine)
    with engine.begin() as conn:
        accounts.claim_probe(conn, account, before, 1.0)
        accounts.hold(conn, account, 5.0)
    record(engine, account, Verdict.RETRY_AFTER, message="Loops answered 429", was_probe=True)
    row = state(engine, account)
    assert row is not None and row["problem_kind"] is None
    assert row["held_until"] is not None and row["held_until"] >= before + 5.0


# --- only bridge/accounts.py writes account_states ------------------------------------------


_WRITES = {"update", "insert", "delete"}
_SQL_WRITE = re.compile(r"\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+\W?account_states\b", re.I)


def writes_to_account_states(source: str) -> list[int]:
    """Lines of ``source`` that write account_states: ``update/insert/delete(AccountState
    ...)`` however qualified (``sa.delete``, ``sqlite.insert``), the same on a name bound to
    the model or its table, the table's own ``.update()``/``.insert()``/``.delete()``, a new
    ``AccountState(...)`` row, or SQL text that writes the table."""
    tree = ast.parse(source)
    aliases = {"AccountState"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _mentions(node.value, aliases):
            aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in _WRITES and node.args and _mentions(node.args[0], aliases):
                found.add(node.lineno)
            elif isinstance(func, ast.Attribute) and name in _WRITES:
                if _mentions(func.value, aliases):
                    found.add(node.lineno)
            elif isinstance(func, ast.Name) and func.id == "AccountState":
                found.add(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _SQL_WRITE.search(node.value):
                found.add(node.lineno)
    return sorted(found)


def _mentions(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def test_the_guard_finds_writes_however_they_are_spelled() -> None:
    samples = [
        "conn.execute(update(AccountState).values(failures=0))",
        "conn.execute(sa.update(AccountState).where(x).values(problem=None))",
        "conn.execute(postgresql.insert(AccountState).values(account_id=1))",
        "states = AccountState.__table__\nconn.execute(sa.delete(states))",
        "t = AccountState.__table__\nconn.execute(t.update().values(held_until=None))",
        "session.add(AccountState(account_id=1))",
        "conn.exec_driver_sql('UPDATE account_states SET failures = 0')",
        'conn.execute(text("delete from \\"account_states\\" where account_id = 1"))',
    ]
    for sample in samples:
        assert writes_to_account_states(sample), sample
    reads = [
        "conn.execute(select(AccountState).where(AccountState.failures > 0))",
        "states = AccountState.__table__\nconn.execute(select(states.c.problem_kind))",
        "conn.execute(update(Delivery).values(status='queued'))",
        "conn.exec_driver_sql('SELECT * FROM account_states')",
    ]
    for sample in reads:
        assert not writes_to_account_states(sample), sample
    owner = (ROOT / "bridge" / "accounts.py").read_text()
    assert len(writes_to_account_states(owner)) >= 7  # ensure, reserve, hold ... _healthy


def test_nothing_but_bridge_accounts_writes_account_states() -> None:
    """A reader finds every change of an account's state by opening one file."""
    owner = ROOT / "bridge" / "accounts.py"
    migrations = ROOT / "bridge" / "migrations"
    found = {}
    for package in ("bridge", "providers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == owner or migrations in path.parents:
                continue
            lines = writes_to_account_states(path.read_text())
            if lines:
                found[str(path.relative_to(ROOT))] = lines
    assert found == {}, "account_states written outside bridge/accounts.py"
