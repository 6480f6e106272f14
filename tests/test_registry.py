"""bridge/registry.py: what an admin types and what a retry or "send again" keeps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlmodel import Session

from bridge import db, registry
from bridge.models import DELIVERED, QUEUED, Delivery
from tests.helpers import stored_delivery, stored_endpoint


def test_a_retried_then_resent_delivery_keeps_each_earlier_outcome(tmp_path: Path):
    engine = db.connect(f"sqlite:///{tmp_path / 'bridge.db'}")
    try:
        registry.add_account(engine, "acme", "loops_key_acme_1234")
        endpoint = stored_endpoint(engine, "acme")
        delivery_id = stored_delivery(
            engine, endpoint, status="dead", attempts=17, finished_at=1796290000.0,
            reason="Loops answered 503: Service Unavailable",
        )  # fmt: skip
        registry.retry_delivery(engine, delivery_id)
        with Session(engine) as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None and delivery.status == QUEUED
            delivery.status, delivery.attempts = DELIVERED, 18
            delivery.reason, delivery.finished_at = "contact created", time.time()
            session.add(delivery)
            session.commit()
        registry.send_again(engine, delivery_id)
        with Session(engine) as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            first, second = (delivery.earlier_outcomes or "").split("\n")
        assert first == (
            "dead at 2026-12-03 09:26:40 UTC after 17 attempts: "
            "Loops answered 503: Service Unavailable"
        )
        assert second.startswith("delivered at ") and second.endswith(
            "after 18 attempts: contact created"
        )
    finally:
        engine.dispose()


def test_a_rate_limit_is_read_as_a_person_types_it():
    assert registry.read_rate_limit(" 25 ") == 25 and registry.read_rate_limit("") is None
    for typed in ("²", "1.5", "ten"):  # "²" counts as a digit, and int() cannot read it
        with pytest.raises(registry.Invalid, match="is not a whole number"):
            registry.read_rate_limit(typed)
