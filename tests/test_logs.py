"""bridge/logs.py: how many lines of one kind a flood may write (Share)."""

from __future__ import annotations

from bridge import logs


def test_a_share_logs_so_many_a_second_per_key_and_then_says_how_many_it_did_not():
    now = [100.0]
    share = logs.Share(2, clock=lambda: now[0])
    assert [share.to_log("ep_a") for _ in range(5)] == [0, 0, None, None, None]
    assert share.to_log("ep_b") == 0  # each key its own share
    now[0] += 1
    assert share.to_log("ep_a") == 3  # the next line says three were not logged
    assert logs.unlogged(3) == " (3 more before this one, not logged)"
    assert logs.unlogged(0) == ""


def test_a_share_forgets_its_keys_past_its_bound():
    share = logs.Share(1, clock=lambda: 0.0)
    share.KEYS = 3
    for key in ("a", "b", "c"):
        share.to_log(key)
    assert share.to_log("a") is None  # counted: its share is spent
    assert share.to_log("d") == 0  # a fourth key: the table starts again
    assert share.to_log("a") == 0
