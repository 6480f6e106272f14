"""The provider registry and the plug-in contract (providers/__init__.py).

Providers are found through the entry-point group ``loops_bridge.providers``, so one from
another installed distribution works without a change to the core. The last tests prove it
with a provider written into a temporary folder, outside the ``providers`` package: a module
and the ``.dist-info`` folder pip would have made for it, on ``sys.path``.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.datastructures import Headers

import providers
from tests.harness import Harness

# A valid secret per provider this repository ships, in the form each platform makes.
SECRETS = {
    "clerk": "whsec_cHJvdmlkZXJzIGNvbnRyYWN0IHRlc3Qh",
    "stripe": "whsec_providersContractSecret0001",
    "supabase": "providersContractSupabaseSecret-0123456789",
}
OTHER_SECRETS = {
    "clerk": "whsec_YW5vdGhlciBjbGVyayBzZWNyZXQhIQ==",
    "stripe": "whsec_providersContractSecret0002",
    "supabase": "providersContractSupabaseSecret-9876543210",
}
ACME_SECRET = "acme-hooks-shared-token-0f9e8d7c6b5a"


def test_this_packages_providers_are_registered_under_their_names():
    assert providers.names() == ("clerk", "stripe", "supabase")  # sorted, for the CLI's help
    for name in providers.names():
        assert providers.get(name).name == name


def test_an_unknown_provider_name_is_an_error_that_lists_the_known_ones():
    with pytest.raises(KeyError) as caught:
        providers.get("mailchimp")
    assert str(caught.value) == (
        "\"unknown provider 'mailchimp'; known providers: clerk, stripe, supabase\""
    )


def assert_loops_properties(properties: dict) -> None:
    """What Loops takes as event properties: flat camelCase keys, scalar values, each string
    within 500 characters with its quotes."""
    for key, value in properties.items():
        assert key.isascii() and key.isalnum() and key[0].islower(), key
        assert isinstance(value, str | int | float | bool), (key, value)
        assert not isinstance(value, str) or len(json.dumps(value)) <= 500, key


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_each_provider_keeps_the_contract(name):
    """The contract the core relies on, checked the same way for every provider: its own
    test request for each type verifies and parses, another secret is refused, and the
    header that authenticates it is never logged whole."""
    provider = providers.get(name)
    assert provider.label and provider.contact_source and provider.event_types
    assert provider.secret_problem(SECRETS[name]) is None
    assert provider.secret_problem("nope")  # a reason, saying where the right one is
    made = provider.new_secret()
    assert made is None or provider.secret_problem(made) is None

    for event_type in provider.event_types:
        body, sent = provider.sample(event_type, "ada@example.com", SECRETS[name])
        headers = Headers(headers=sent)  # as the app hands them on: names in any case
        provider.verify(body, headers, [SECRETS[name]])
        provider.verify(body, headers, [OTHER_SECRETS[name], SECRETS[name]])  # while rolling
        with pytest.raises(providers.Rejected):
            provider.verify(body, headers, [OTHER_SECRETS[name]])
        event = provider.parse(body, headers)
        assert event.type == event_type
        assert event.email == "ada@example.com" or (event.email is None and event.user_id)
        assert_loops_properties(provider.details(body).properties)

        shown = {k: provider.redact(k, v) for k, v in headers.items()}
        own = {k: v for k, v in shown.items() if v is not None}
        assert any(v != headers[k] for k, v in own.items()), f"{name} hides none of {sent}"
        assert not any(SECRETS[name] in value for value in own.values())
        assert provider.redact("content-type", "application/json") is None


# -- a provider from another package ----------------------------------------------------------

# A platform this repository knows nothing of: Acme sends {"id", "type", "at", "member",
# "email", "first_name", "plan"} with a shared token in the X-Acme-Token header.
ACME_MODULE = '''
    """Acme Hooks for loops-bridge: a provider living in a distribution of its own."""

    import hmac
    import json

    from providers import Details, Event, Rejected

    HEADER = "x-acme-token"


    def _header(headers, name):
        return next((v for k, v in headers.items() if k.lower() == name), None)


    class AcmeHooks:
        name = "acmehooks"
        label = "Acme Hooks"
        contact_source = "Acme webhook"
        event_types = ("member.joined", "member.left")

        def verify(self, body, headers, secrets):
            sent = (_header(headers, HEADER) or "").encode()
            if not any(hmac.compare_digest(sent, secret.encode()) for secret in secrets):
                raise Rejected("The X-Acme-Token header does not match: copy it from Acme.")

        def parse(self, body, headers):
            try:
                hook = json.loads(body)
                return Event(
                    id=hook["id"],
                    type=hook["type"],
                    occurred_at=hook["at"],
                    email=hook.get("email"),
                    user_id=hook.get("member"),
                    deletion=hook["type"] == "member.left",
                )
            except (ValueError, KeyError, TypeError):
                raise Rejected("The body is not an Acme webhook.") from None

        def details(self, body):
            hook = json.loads(body)
            return Details(first_name=hook.get("first_name"), properties={"plan": hook["plan"]})

        def secret_problem(self, secret):
            return None if len(secret) >= 24 else "Copy the token from Acme: Settings, Hooks."

        def new_secret(self):
            return None

        def redact(self, name, value):
            return "[redacted]" if name.lower() == HEADER else None

        def sample(self, event_type, email, secret):
            hook = {"id": "hk_sample", "type": event_type, "at": 1700000000,
                    "member": "m_sample", "email": email, "first_name": "Sam", "plan": "pro"}
            return json.dumps(hook).encode(), {"X-Acme-Token": secret}


    provider = AcmeHooks()
'''


@pytest.fixture
def acme_installed(tmp_path: Path) -> Iterator[Path]:
    """The module ``acme_hooks`` and its distribution's metadata in a folder on sys.path, as
    ``pip install acme-hooks`` would leave them in site-packages; removed afterwards."""
    site = tmp_path / "site-packages"
    dist_info = site / "acme_hooks-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (site / "acme_hooks.py").write_text(textwrap.dedent(ACME_MODULE))
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-hooks\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[loops_bridge.providers]\nacmehooks = acme_hooks:provider\n"
    )
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    # The registry reads the installed entry points once: read them again, now and after.
    providers._registered.cache_clear()
    providers.get.cache_clear()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("acme_hooks", None)
        importlib.invalidate_caches()
        providers._registered.cache_clear()
        providers.get.cache_clear()


def acme_hook(hook_id: str, event_type: str) -> bytes:
    return json.dumps(
        {
            "id": hook_id,
            "type": event_type,
            "at": 1700000000,
            "member": "m_42",
            "email": "grace@example.com",
            "first_name": "Grace",
            "plan": "team",
        }
    ).encode()


def test_a_provider_from_another_package_is_found_and_delivers(acme_installed, tmp_path):
    assert providers.names() == ("acmehooks", "clerk", "stripe", "supabase")
    acme = providers.get("acmehooks")
    assert Path(sys.modules[type(acme).__module__].__file__).parent == acme_installed

    with Harness(tmp_path) as h:
        h.account()
        created = h.cli(
            "endpoints", "create", "--name", "Acme", "--account", "acme",
            "--provider", "acmehooks", "--events", "member.joined,member.left",
            "--user-group", "members", "--loops-events", "member.joined=joinedTeam",
            "--signing-secret", ACME_SECRET, "--json",
        )  # fmt: skip

        def send(body: bytes, token: str = ACME_SECRET) -> dict:
            url = f"/webhooks/{created['id']}"
            answer = h.run(h.client.post(url, content=body, headers={"X-Acme-Token": token}))
            return answer.json()

        wrong = send(acme_hook("hk_1", "member.joined"), token="x" * 30)
        assert wrong["reason"] == "The X-Acme-Token header does not match: copy it from Acme."
        assert send(acme_hook("hk_1", "member.joined"))["status"] == "queued"
        h.settled(1)
        (contact,) = h.loops_get("contacts")
        assert (contact["userId"], contact["email"]) == ("m_42", "grace@example.com")
        assert (contact["source"], contact["userGroup"]) == ("Acme webhook", "members")
        assert contact["firstName"] == "Grace"
        (event,) = h.loops_get("events")
        assert (event["eventName"], event["eventProperties"]) == ("joinedTeam", {"plan": "team"})

        assert send(acme_hook("hk_2", "member.left"))["status"] == "queued"
        assert h.settled(2)[-1]["reason"] == "contact unsubscribed in Loops"
        assert h.loops_get("contacts")[0]["subscribed"] is False
