from tests.helpers import fixture_bytes
SECRET = "whsec_scratchScratchScratch0000000"

def test_harness_delivers(harness):
    endpoint = harness.endpoint("invoice.paid", secret=SECRET, loops_event="successfulPayment")
    body = fixture_bytes("captured-test-mode/invoice.paid.event.json")
    answer = harness.webhook(endpoint, body, SECRET)
    assert answer.status_code == 200, answer.text
    rows = harness.settled(1)
    assert rows[0]["status"] == "delivered", rows
    assert [c["path"] for c in harness.loops_calls()] == ["/api/v1/contacts/create", "/api/v1/events/send"]
    listed = harness.cli("deliveries", "list", "--json")
    assert listed[0]["status"] == "delivered"

def test_key_refused_then_replaced(tmp_path):
    from tests.harness import Harness
    from bridge import registry
    with Harness(tmp_path, sandbox_keys=["loops_key_good_9999"]) as h:
        acct = h.account("acme", "loops_key_bad_00001")
        endpoint = h.endpoint("invoice.paid", secret=SECRET)
        body = fixture_bytes("captured-test-mode/invoice.paid.event.json")
        h.webhook(endpoint, body, SECRET)
        h.until(lambda: "paused" in (h.deliveries()[0]["reason"] or ""), what="paused")
        registry.update_account(h.engine, acct, api_key="loops_key_good_9999")
        rows = h.settled(1)
        assert rows[0]["status"] == "delivered"
