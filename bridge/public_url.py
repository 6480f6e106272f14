"""Whether webhook platforms can send to the bridge's public URL (``BRIDGE_PUBLIC_URL``).

Stripe, Clerk (through Svix) and Supabase send webhooks from their own servers, so the
endpoint URL they are given must be a public HTTPS address (Stripe sends events to an "HTTPS
webhook endpoint": https://docs.stripe.com/webhooks). :func:`unreachable` says why a URL is
not one, reading only the URL (no name is looked up):

    loopback        127.0.0.0/8, ::1, localhost, *.localhost: this machine only
    private         any other address that is not global: 10/8, 172.16/12, 192.168/16,
                    169.254/16, 100.64/10, fc00::/7, 0.0.0.0 ...
    local name      a name of one label (``bridge``), or one under a suffix no public DNS
                    answers for: .local, .internal, .lan, .home.arpa, .test, .invalid
    plain http      readable on its way, and not what Stripe sends to

The admin's endpoint page shows it, and ``loops-bridge endpoints create`` prints it. It names
no platform (the core never does): a platform's own way to test from a machine that cannot be
reached, such as ``stripe listen --forward-to``, is said by its page (``local_test()`` in
``templates/endpoints/setup_stripe.html``).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["unreachable"]

_LOCAL_SUFFIXES = (".local", ".internal", ".lan", ".home.arpa", ".test", ".invalid")


def unreachable(url: str) -> str | None:
    """Why webhook platforms cannot, or should not, send to ``url``, and what to do, in
    words for the person setting the bridge up; None when it is a public HTTPS address."""
    parts = urlsplit(url.strip())
    problems = [where] if (where := _local(parts.hostname or "")) else []
    if parts.scheme != "https":
        problems.append("it is plain http, not HTTPS" if parts.scheme == "http" else "not HTTPS")
    if not problems:
        return None
    return (
        f"BRIDGE_PUBLIC_URL is {url}: {', and '.join(problems)}. Webhook platforms send "
        "from the internet, to a public HTTPS address: set BRIDGE_PUBLIC_URL to the one this "
        "bridge is reached at (e.g. https://hooks.example.com, behind a proxy that holds its "
        "certificate) and restart it."
    )


def _local(host: str) -> str | None:
    """Why ``host`` cannot be reached from the internet, or None."""
    host = host.rstrip(".").lower()
    if not host:
        return "it names no host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            return f"{host} is this machine itself (loopback)"
        if "." not in host or host.endswith(_LOCAL_SUFFIXES):
            return f"{host} is a name only a local network knows"
        return None
    if address.is_loopback:
        return f"{host} is this machine itself (loopback)"
    if not address.is_global:
        return f"{host} is a private address, which the internet does not reach"
    return None
