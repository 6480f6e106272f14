"""The rule that says when webhook platforms cannot reach BRIDGE_PUBLIC_URL."""

from __future__ import annotations

import pytest

from bridge.public_url import unreachable


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1 is this machine itself (loopback), and it is plain"),
        ("https://localhost:8443/x", "localhost is this machine itself (loopback)."),
        ("https://[::1]:8000", "::1 is this machine itself (loopback)."),
        ("https://10.0.0.5", "10.0.0.5 is a private address, which the internet does not reach."),
        ("https://192.168.1.20", "192.168.1.20 is a private address"),
        ("https://[fd00::1]", "fd00::1 is a private address"),
        ("https://0.0.0.0", "0.0.0.0 is a private address"),
        ("https://bridge:8000", "bridge is a name only a local network knows."),
        ("https://nas.local", "nas.local is a name only a local network knows."),
        ("http://bridge.test", "bridge.test is a name only a local network knows, and it is plain"),
        ("http://hooks.example.com", "hooks.example.com: it is plain http, not HTTPS."),
    ],
)
def test_a_url_platforms_cannot_reach_is_said_with_what_to_do(url: str, said: str):
    warning = unreachable(url)
    assert warning is not None and said in warning
    assert warning.startswith(f"BRIDGE_PUBLIC_URL is {url}: ")
    assert warning.endswith(
        "Webhook platforms send from the internet, to a public HTTPS address: set "
        "BRIDGE_PUBLIC_URL to the one this bridge is reached at (e.g. https://hooks.example.com, "
        "behind a proxy that holds its certificate) and restart it."
    )


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com", "https://8.8.8.8/hooks", "https://bridge.acme.io:8443"]
)
def test_a_public_https_url_is_fine(url: str):
    assert unreachable(url) is None
