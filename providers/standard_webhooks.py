"""Standard Webhooks' signatures (https://www.standardwebhooks.com/), checked once for every
platform that signs that way: Clerk (through Svix, as ``svix-id``, ``svix-timestamp``,
``svix-signature``) and Loops' own webhooks (``Webhook-Id``, ``Webhook-Timestamp``,
``Webhook-Signature``). Only the header names, the platform's name and where its secret is
found differ; a :class:`Scheme` holds those.

The signature is ``v1,`` + base64 HMAC-SHA256 over ``f"{id}.{timestamp}.{body}"``, keyed
with the base64-decoded part of the ``whsec_...`` secret, one space-separated ``v1,`` entry
per signing secret while one is rolled. The maintained ``standardwebhooks`` library does the
check (constant-time, with :func:`hmac.compare_digest`), once per configured secret, and
refuses a timestamp more than :data:`TOLERANCE` seconds from this server's clock either way.
Before that, headers no such platform sends are refused with a reason: missing, not
printable ASCII, a signature header longer than :data:`MAX_HEADER_CHARS` or with more than
:data:`MAX_SIGNATURES` entries, a timestamp that is not whole seconds.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError

from providers import Rejected
from providers.fields import MAX_ID_CHARS, is_id

__all__ = ["MAX_HEADER_CHARS", "MAX_SIGNATURES", "TOLERANCE", "Scheme", "is_secret", "webhook"]

TOLERANCE = 300  # seconds either way: standardwebhooks 1.1's window (5 minutes), Svix's too
MAX_SIGNATURES = 10  # v1, entries in one signature header: one per signing secret
MAX_HEADER_CHARS = 2048  # room for them (a v1 entry is 47 characters)

_NO_MATCH_MESSAGE = "No matching signature found"
_STANDARD = ("webhook-id", "webhook-timestamp", "webhook-signature")  # what the library reads


def is_secret(secret: str) -> bool:
    """``secret`` is ``whsec_`` followed by non-empty strict base64, padded or not."""
    if not secret.startswith("whsec_"):
        return False
    key = secret.removeprefix("whsec_")
    try:
        return bool(base64.b64decode(key + "=" * (-len(key) % 4), validate=True))
    except (binascii.Error, ValueError):
        return False


def webhook(secret: str) -> Webhook | None:
    """The library's checker (and signer) for ``secret``, or None if it cannot be one."""
    try:
        return Webhook(secret)
    except (ValueError, EmptyWebhookSecretError):  # not base64, or nothing after whsec_
        return None


def _header(headers: Mapping[str, str], name: str) -> str:
    """``name`` (lower case) in any case: a starlette ``Headers`` finds it itself, a plain
    dict is searched. "" when it is missing."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value or ""


class Scheme:
    """One platform's Standard Webhooks: its name (``label``), its names for the id,
    timestamp and signature headers as it writes them (``svix-id``, ``Webhook-Id``), and
    the reasons that say where its secret is found: none configured (``no_secret``), none
    usable (``unusable_secrets``), none that makes the signature (``no_match``).

    The reasons are shown to the sender and the admin, and never hold a secret."""

    def __init__(
        self,
        label: str,
        headers: tuple[str, str, str],
        *,
        no_secret: str,
        unusable_secrets: str,
        no_match: str,
    ) -> None:
        self.label = label
        self.headers = headers
        self.no_secret, self.unusable_secrets, self.no_match = no_secret, unusable_secrets, no_match
        id_name, timestamp_name, signature_name = headers
        self.bad_id = (
            f"The {id_name} header is longer than {MAX_ID_CHARS} characters or holds characters "
            f"other than printable ASCII. Send the header exactly as {label} sent it."
        )
        self.bad_timestamp = (
            f"The {timestamp_name} header is not a unix time in whole seconds. Send the header "
            f"exactly as {label} sent it."
        )
        self.malformed = (
            f"The {signature_name} header is malformed: expected 'v1,<base64 signature>', "
            "several separated by single spaces while a secret is rolled. Send the header "
            f"exactly as {label} sent it."
        )
        self.no_v1 = (
            f"The {signature_name} header has no v1 signature ('v1,<base64>'; other schemes "
            f"are ignored). {label} signs every webhook with v1: check that the request really "
            f"comes from {label}."
        )
        self.too_long = (
            f"The {signature_name} header is longer than {MAX_HEADER_CHARS} characters or "
            f"holds more than {MAX_SIGNATURES} signatures. {label} sends one v1 signature per "
            "signing secret (two while a secret is being rolled)."
        )
        self.not_utf8 = (
            f"The request body is not UTF-8 text, so it is not a {label} event as {label} sent "
            "it (a proxy may have re-encoded or compressed it)."
        )
        self.stale = (
            f"The {timestamp_name} is more than {TOLERANCE} s old, so the request was refused "
            f"as a possible replay. If {label} sent it just now, this server's clock is off: "
            "check it (sync it with NTP)."
        )
        self.future = (
            f"The {timestamp_name} is more than {TOLERANCE} s in the future, so the request was "
            "refused: a signature is only accepted within that window of this server's clock. "
            f"If {label} sent it just now, this server's clock is behind: check it (sync it "
            "with NTP)."
        )
        # standardwebhooks 1.1 WebhookVerificationError messages (webhooks.py) -> our reason.
        self._library_reasons = {
            "Message timestamp too old": self.stale,
            "Message timestamp too new": self.future,
            "Invalid Signature Headers": self.bad_timestamp,
        }

    def no_header(self, name: str) -> str:
        return (
            f"The request has no {name} header: is this request from {self.label}? "
            f"{self.label} signs every webhook with the {self.headers[0]}, {self.headers[1]} "
            f"and {self.headers[2]} headers. Send only {self.label} webhooks to this URL, and "
            "check that no proxy drops those headers."
        )

    def redact(self, name: str, value: str) -> str | None:
        """How the rejected-requests log shows this scheme's headers: the id and timestamp
        as they are, the signature as each entry's scheme only (``v1,…``); None for any
        other header (``bridge.inbox.redact``'s rules)."""
        name = name.lower()
        if name in (self.headers[0].lower(), self.headers[1].lower()):
            return value
        if name != self.headers[2].lower():
            return None
        shown = []
        for entry in value.split():
            scheme = entry.split(",", 1)[0]
            short = len(scheme) <= 3 and scheme.isascii() and scheme.isalnum() and "," in entry
            shown.append(f"{scheme},…" if short else "…")
        return " ".join(shown)

    def message_id(self, headers: Mapping[str, str]) -> str:
        """The id header, fit to dedupe on; Rejected if it is missing or could not be one."""
        msg_id = _header(headers, self.headers[0].lower())
        if not msg_id:
            raise Rejected(self.no_header(self.headers[0]))
        if not is_id(msg_id):
            raise Rejected(self.bad_id)
        return msg_id

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
        """The id of a request signed by one of ``secrets`` within the window; Rejected with
        the reason otherwise."""
        usable = [secret for secret in secrets if secret.strip()]
        if not usable:
            raise Rejected(self.no_secret)
        values = [_header(headers, name.lower()) for name in self.headers]
        for name, value in zip(self.headers, values, strict=True):
            if not value:
                raise Rejected(self.no_header(name))
        msg_id, timestamp, signature = values
        if not is_id(msg_id):
            raise Rejected(self.bad_id)
        # The library reads float(): "1.7e9" or " 17..." would pass it, and be signed as
        # another string than the one sent.
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise Rejected(self.bad_timestamp)
        if len(signature) > MAX_HEADER_CHARS or signature.count("v1,") > MAX_SIGNATURES:
            raise Rejected(self.too_long)
        if not (signature.isascii() and signature.isprintable()):
            raise Rejected(self.malformed)
        if not any(entry.startswith("v1,") for entry in signature.split(" ")):
            raise Rejected(self.no_v1)
        try:
            payload = body.decode("utf-8")  # once, not once per secret inside the library
        except UnicodeDecodeError:
            raise Rejected(self.not_utf8) from None
        checks = [check for check in map(webhook, usable) if check is not None]
        if not checks:
            raise Rejected(self.unusable_secrets)
        standard = dict(zip(_STANDARD, (msg_id, timestamp, signature), strict=True))
        for check in checks:
            try:
                check.verify(payload, standard, json_parse=False)
            except WebhookVerificationError as error:
                message = str(error)
                # Only "no match" depends on the secret; every other failure is the request's.
                if message != _NO_MATCH_MESSAGE:
                    failed = f"The {self.label} signature check failed: {message}"
                    raise Rejected(self._library_reasons.get(message, failed)) from None
            except ValueError:  # standardwebhooks 1.1: an entry it could not read
                raise Rejected(self.malformed) from None
            else:
                return msg_id
        raise Rejected(self.no_match if _well_formed(signature) else self.malformed)


def _well_formed(signature: str) -> bool:
    """Whether every space-separated entry is ``version,signature`` with one comma, each v1
    signature read as base64 the way standardwebhooks 1.1 read it. That version refused
    any other entry it reached with a ValueError; 1.3 skips it and answers "no matching
    signature", which would send the sender after a wrong secret instead of a mangled
    header. Asked only when no secret matched: an entry after a matching one is never
    read, by either version."""
    for entry in signature.split(" "):
        version, comma, value = entry.partition(",")
        if not comma or "," in value:
            return False
        if version == "v1":
            try:
                base64.b64decode(value)
            except binascii.Error:
                return False
    return True
