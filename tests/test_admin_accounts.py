"""A Loops API key is checked with Loops (``GET /api-key``) before the admin saves it, when an
account is added and when its key is replaced: a key Loops refuses, or one that cannot be
checked, is refused on the form with the reason, unless "Save without checking" is ticked.

The bridge runs in-process without its worker (tests/harness.py); the admin's Loops calls go
to the sandbox, which takes only the keys given to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import registry
from tests.harness import Harness
from tests.helpers import Page, words

RIGHT = "loops_key_right_1234"
WRONG = "loops_key_wrong_0000"


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Harness]:
    with Harness(tmp_path, worker=False, sandbox_keys=[RIGHT]) as started:
        started.sign_in()
        started.connect_admin()
        yield started


def key_error(response) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 400, response.text
    page = Page(response)
    field = "account-key" if "account-key" in page.by_id else "api_key"
    assert page[field]["aria-invalid"] == "true"
    assert RIGHT not in page.source and WRONG not in page.source  # never shown again
    return words(page[f"{field}-error"]["text"])


def test_a_key_loops_refuses_is_not_added(admin: Harness):
    refused = admin.form("/admin/accounts", name="acme", api_key=WRONG)
    assert key_error(refused) == (
        "Loops refused this API key (Loops answered 401: Invalid API key). Copy it again from "
        "Loops: Settings → API."
    )
    assert Page(refused)["account-name"]["value"] == "acme"  # the name is kept
    assert registry.list_accounts(admin.engine) == []

    added = admin.form("/admin/accounts", name="acme", api_key=RIGHT)
    assert added.status_code == 303
    assert "Added Loops account 'acme' (key loops_…1234). Loops took the key." in (
        admin.page("/admin/accounts").text
    )
    assert [c["path"] for c in admin.loops_calls()] == ["/api/v1/api-key"] * 2


def test_a_key_that_cannot_be_checked_is_saved_only_without_checking(admin: Harness):
    admin.fault(status=503)  # Loops down while the account is set up
    refused = admin.form("/admin/accounts", name="acme", api_key=RIGHT)
    said = key_error(refused)
    assert said.startswith("The key could not be checked with Loops (Loops answered 503")
    assert said.endswith("Try again once Loops answers, or save it without checking.")
    assert "Save without checking" in Page(refused)["main"]["text"]
    assert registry.list_accounts(admin.engine) == []

    calls = len(admin.loops_calls())
    added = admin.form("/admin/accounts", name="acme", api_key=RIGHT, no_check="on")
    assert added.status_code == 303
    assert len(admin.loops_calls()) == calls  # Loops was not asked
    assert (
        "Added Loops account 'acme' (key loops_…1234). It was saved without checking it with "
        "Loops: press Test once Loops answers." in admin.page("/admin/accounts").text
    )
    assert registry.list_accounts(admin.engine)[0].api_key == RIGHT


def test_a_replacing_key_is_checked_too(admin: Harness):
    acme = registry.add_account(admin.engine, "acme", RIGHT).id
    url = f"/admin/accounts/{acme}/api-key"

    refused = admin.form(url, api_key=WRONG)
    assert key_error(refused).startswith("Loops refused this API key (Loops answered 401")
    assert registry.get_account(admin.engine, acme).api_key == RIGHT

    replaced = admin.form(url, api_key=WRONG, no_check="on")  # Loops may know better later
    assert replaced.status_code == 303
    assert (
        "It was saved without checking it with Loops" in admin.page(f"/admin/accounts/{acme}").text
    )
    assert registry.get_account(admin.engine, acme).api_key == WRONG

    assert admin.form(url, api_key=RIGHT).status_code == 303
    assert "Loops took the key." in admin.page(f"/admin/accounts/{acme}").text
    assert admin.form("/admin/accounts/999/api-key", api_key=RIGHT).status_code == 404
