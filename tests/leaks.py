"""The leak check: no secret the tests give the bridge ever comes back out of it.

The issue's contract: "A test runs the whole suite's scenarios with log capture and asserts
that no secret value (API key, signing secret, admin password, session cookie) appears in
any log line, CLI output, HTML page or error message."

For the whole test session, this plugin learns secrets and collects texts, and after each
test it searches that test's texts for every secret learned so far.

Secrets, as the tests hand them to the bridge or the bridge makes them (:func:`secret`)::

    Loops API key      --api-key (and its stdin), the admin's api_key field, a Bearer
                       header, every value the vault encrypts that is not a signing secret
    signing secret     --signing-secret, add-secret and remove-secret, the admin's secret
                       field, every whsec_ value the vault encrypts
    admin password     BRIDGE_ADMIN_PASSWORD, the admin's password field (wrong ones too),
                       every password hashed, the one a first start generates
    session cookie     every value of the admin's session cookie in a Set-Cookie header
    secret key         BRIDGE_SECRET_KEY, every key file under the tests' temporary folders,
                       the keys of every vault that encrypts, the key rotate-secret-key shows
    database password  the password in BRIDGE_DATABASE_URL

and the string constants of the test modules whose name says key, secret or password.

Texts, everything the bridge shows a person or a program (:func:`text`)::

    log file           what each ``serve``, ``sandbox`` and ``worker`` process wrote
    CLI                the stdout and the stderr of each ``loops-bridge`` command
    HTTP               each HTTP answer a test receives: status, headers and body (admin
                       pages, JSON answers and errors, /metrics, the sandbox's pages)
    log record         each log record of the bridge running inside the test process,
                       formatted by the bridge's own JSON formatter
    captured output    what the test process wrote to stdout and stderr

A text shows a secret when it holds its whole value or any 12 of its characters in a row
(from a word of the secret of 16 characters or more): a key cut short, or quoted with its
line break escaped, is still a leak, while a hint such as ``whsec_…abcd`` shows 4. A full
``whsec_`` value that no test registered counts too. Two texts show a secret on purpose,
once: the admin password a first start generates, and the new key ``rotate-secret-key``
prints when BRIDGE_SECRET_KEY holds the key. The value is allowed there; a second
announcement of it is a leak.

At the end of the session a leak fails the run, with a report that names the kind of each
secret and its last 4 characters (never the whole value), the test, the text and the line,
masked. ``tests/test_leaks.py`` checks the checker.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import html
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import pytest

__all__ = [
    "ADMIN_PASSWORD",
    "API_KEY",
    "DATABASE_PASSWORD",
    "KINDS",
    "PIECE",
    "SECRET_KEY",
    "SESSION_COOKIE",
    "SIGNING_SECRET",
    "Leak",
    "Scanned",
    "Scanner",
    "Tally",
    "Text",
    "check",
    "command",
    "environment",
    "install",
    "known",
    "process",
    "secret",
    "text",
    "watch",
]

API_KEY = "Loops API key"
SIGNING_SECRET = "signing secret"
ADMIN_PASSWORD = "admin password"
SESSION_COOKIE = "session cookie"
SECRET_KEY = "secret key"
DATABASE_PASSWORD = "database password"
ALERT_CREDENTIAL = "alert webhook URL or SMTP password"
KINDS = (API_KEY, SIGNING_SECRET, ADMIN_PASSWORD, SESSION_COOKIE, SECRET_KEY, DATABASE_PASSWORD)

SHORTEST = 8  # shorter values ("key", "nope") are too common to be told apart from text
PIECE = 12  # characters of a secret in a row that count as a leak
PIECES_FROM = 16  # only words of a secret this long are searched for in pieces
_VARIED = 6  # a piece needs this many different characters: "AAAAAAAAAAAA" proves nothing

# Texts that show a secret on purpose, once: (the value, what kind of secret it is).
SHOWN_ONCE = (
    (re.compile(r"admin password \(shown once, only a hash is kept\): (\S+)"), ADMIN_PASSWORD),
    (re.compile(r"It is shown this once and the bridge stores it nowhere:\s+(\S+)"), SECRET_KEY),
    (re.compile(r'"secret_key": "([^"]+)"'), SECRET_KEY),
    # A secret the bridge makes for an endpoint (Supabase's Loops-Secret): the CLI's text, its
    # --json, and the admin's page after creating the endpoint.
    (
        re.compile(r"made for you and shown only this once:\s+(?:<code[^>]*>)?([^\s<\"]+)"),
        SIGNING_SECRET,
    ),
    (re.compile(r'"signing_secret": "([^"]+)"'), SIGNING_SECRET),
)
# A Stripe signing secret in full, registered or not (a hint has "…" after the prefix).
SIGNING_SHAPE = re.compile(r"whsec_[A-Za-z0-9]{8,}")
_SHOWN = "«shown once»"


# -- the search ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    category: str  # "log file", "CLI", "HTTP", "log record" or "captured output"
    where: str  # which one, in words; never holds a secret
    body: str
    test: str = ""


@dataclass(frozen=True, slots=True)
class Leak:
    kind: str
    hint: str  # "…AAA1, 34 characters": never the value
    learned: str  # where the secret came from
    test: str
    where: str
    line: str  # the line of the text, every secret in it masked
    how: str  # "the whole value", "12 characters in a row of it", ...

    def __str__(self) -> str:
        return (
            f"{self.test or '(no test)'}\n  {self.how}: {self.kind} {self.hint} "
            f"(learned from {self.learned})\n  in {self.where}:\n    {self.line}"
        )


def _decoded(body: str) -> list[str]:
    """``body``, and as a reader sees it when it is HTML or a URL: ``&#39;`` is ``'``."""
    shown = [body]
    for decode, marker in ((html.unescape, "&"), (unquote, "%")):
        if marker in body and (decoded := decode(body)) != body:
            shown.append(decoded)
    return shown


def hint(value: str) -> str:
    return f"…{value[-4:]}, {len(value)} characters"


@functools.cache  # a secret is searched for in every text after it is learned
def pieces(value: str) -> tuple[str, ...]:
    """The runs of ``PIECE`` characters that show part of ``value``: taken from each of its
    words (a value split by whitespace, or by an escaped line break) of ``PIECES_FROM``
    characters or more, with enough different characters to mean something."""
    found = []
    for word in value.split():
        if len(word) >= PIECES_FROM:
            runs = (word[i : i + PIECE] for i in range(len(word) - PIECE + 1))
            found += [run for run in runs if len(set(run)) >= _VARIED]
    return tuple(found)


class Scanner:
    """The secrets known so far, and texts searched for them."""

    def __init__(self) -> None:
        self.secrets: dict[str, tuple[str, str]] = {}  # value -> (kind, where it was learned)
        self.shown_once: dict[str, str] = {}  # value -> the text it was shown in
        self.leaks: list[Leak] = []
        self.texts: Counter[str] = Counter()  # category -> texts searched
        self.lines = 0
        self.characters = 0
        self._index: dict[str, set[str]] = {}  # 12 characters -> secrets holding them
        self._short: list[str] = []  # secrets shorter than PIECE, searched whole
        self._lock = threading.RLock()

    def secret(self, value: str, kind: str, learned: str) -> None:
        value = value.strip()
        if len(value) < SHORTEST:
            return
        with self._lock:
            if value not in self.secrets:
                self.secrets[value] = (kind, learned)
                if len(value) < PIECE:
                    self._short.append(value)
                else:
                    for run in (value[:PIECE], *pieces(value)):
                        self._index.setdefault(run, set()).add(value)

    def kinds(self) -> Counter[str]:
        return Counter(kind for kind, _ in self.secrets.values())

    def scan(self, texts: Iterable[Text]) -> list[Leak]:
        """Search ``texts``; their leaks are returned and kept in :attr:`leaks`."""
        with self._lock:
            texts = list(texts)
            found: list[Leak] = []
            # Announcements first: a value shown once is a secret in every other text.
            bodies = [self._announced(t, found) for t in texts]
            for text, body in zip(texts, bodies, strict=True):
                self.texts[text.category] += 1
                self.lines += body.count("\n") + 1
                self.characters += len(body)
                found += self._search(text, body)
            self.leaks += found
            return found

    def _announced(self, text: Text, found: list[Leak]) -> str:
        """``text``'s body with each value shown on purpose replaced; a value shown a second
        time is a leak."""
        body = text.body
        for pattern, kind in SHOWN_ONCE:
            for match in reversed(list(pattern.finditer(body))):
                value = match.group(1)
                self.secret(value, kind, f"its announcement in {text.where}")
                if value in self.shown_once:
                    how = f"shown a second time (first in {self.shown_once[value]})"
                    found.append(self._leak(value, how, text, body, match.start(1)))
                else:
                    self.shown_once[value] = text.where
                start, end = match.span(1)
                body = body[:start] + _SHOWN + body[end:]
        return body

    def _search(self, text: Text, body: str) -> list[Leak]:
        index, short = self._indexed()
        found: list[Leak] = []
        leaked: set[str] = set()
        for shown in _decoded(body):
            windows = {shown[i : i + PIECE] for i in range(len(shown) - PIECE + 1)}
            candidates = {value for w in windows & index.keys() for value in index[w]}
            candidates.update(value for value in short if value in shown)
            for value in sorted(candidates - leaked):
                at = shown.find(value)
                if at >= 0:
                    found.append(self._leak(value, "the whole value", text, shown, at))
                    leaked.add(value)
                    continue
                piece = next((p for p in pieces(value) if p in windows), None)
                if piece is not None:
                    how = f"{PIECE} characters in a row of it"
                    found.append(self._leak(value, how, text, shown, shown.find(piece)))
                    leaked.add(value)
        for match in SIGNING_SHAPE.finditer(body):
            if match.group() not in self.secrets and not any(
                match.group() in value for value in leaked
            ):
                self.secret(match.group(), SIGNING_SECRET, f"its shape, in {text.where}")
                found.append(
                    self._leak(match.group(), "a whsec_ value in full", text, body, match.start())
                )
        return found

    def _indexed(self) -> tuple[dict[str, set[str]], list[str]]:
        return self._index, self._short

    def _leak(self, value: str, how: str, text: Text, body: str, at: int) -> Leak:
        kind, learned = self.secrets.get(value, (SIGNING_SECRET, "its shape"))
        start = body.rfind("\n", 0, at) + 1
        end = body.find("\n", at)
        line = self.mask(body[start : len(body) if end < 0 else end])
        at -= start
        excerpt = line[max(0, at - 100) : at + 100].strip()
        return Leak(kind, hint(value), learned, text.test, text.where, excerpt, how)

    def mask(self, line: str) -> str:
        """``line`` with every secret, and every piece of one, replaced by ``[secret]``."""
        index, short = self._indexed()
        hidden = [False] * len(line)
        for i in range(len(line) - PIECE + 1):
            if line[i : i + PIECE] in index:
                hidden[i : i + PIECE] = [True] * PIECE
        for value in [*short, *(v for v in self.secrets if v in line)]:
            at = line.find(value)
            while at >= 0:
                hidden[at : at + len(value)] = [True] * len(value)
                at = line.find(value, at + 1)
        for match in SIGNING_SHAPE.finditer(line):
            hidden[match.start() : match.end()] = [True] * len(match.group())
        out, i = [], 0
        while i < len(line):
            if hidden[i]:
                while i < len(line) and hidden[i]:
                    i += 1
                out.append("[secret]")
            else:
                out.append(line[i])
                i += 1
        return "".join(out)

    def tally(self, tests: int) -> Tally:
        """What this scanner did, in a form that crosses to the xdist controller."""
        return Tally(
            tests=tests,
            texts=dict(self.texts),
            lines=self.lines,
            characters=self.characters,
            # Digests, not values: the controller only counts them.
            secrets={
                hashlib.sha256(v.encode()).hexdigest(): k for v, (k, _) in self.secrets.items()
            },
            leaks=[asdict(leak) for leak in self.leaks],
        )


@dataclass
class Tally:
    """The counts of one or more scanners (one per xdist worker) and their leaks, as plain
    values: a worker hands its own to the controller, which adds them up for the summary."""

    tests: int = 0
    texts: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    characters: int = 0
    secrets: dict[str, str] = field(default_factory=dict)  # sha256 of a value -> its kind
    leaks: list[dict[str, str]] = field(default_factory=list)  # Leak's fields

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.tests + other.tests,
            dict(Counter(self.texts) + Counter(other.texts)),
            self.lines + other.lines,
            self.characters + other.characters,
            {**self.secrets, **other.secrets},
            self.leaks + other.leaks,
        )

    def summary(self) -> str:
        texts = "".join(f"{n} {category}, " for category, n in sorted(self.texts.items()))
        kinds = Counter(self.secrets.values())
        kinds_ = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        return (
            f"{sum(self.texts.values())} texts ({texts}{self.lines} lines, "
            f"{self.characters / 1e6:.1f} MB) searched for {len(self.secrets)} secrets "
            f"({kinds_}) after {self.tests} tests"
        )


# -- what the tests register ----------------------------------------------------------------


def _kind_of_name(name: str) -> str | None:
    upper = name.upper()
    if "HINT" in upper:
        return None
    if "PASSWORD" in upper:
        return ADMIN_PASSWORD
    if "SECRET" in upper:
        return SIGNING_SECRET
    if upper.endswith("KEY"):
        return API_KEY
    return None


def constants(folder: Path) -> Iterator[tuple[str, str, str]]:
    """(value, kind, where) of each string constant in the test modules of ``folder`` that
    is a whsec_ value, or is assigned to a name that says key, secret or password."""
    for path in sorted(folder.glob("*.py")):
        if path.name == Path(__file__).name:
            continue  # the names of the kinds of secrets are not secrets
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if SIGNING_SHAPE.fullmatch(node.value):
                    yield node.value, SIGNING_SECRET, f"{path.name}:{node.lineno}"
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                if not isinstance(node.value.value, str) or "…" in node.value.value:
                    continue
                for target in node.targets:
                    if isinstance(target, ast.Name) and (kind := _kind_of_name(target.id)):
                        yield node.value.value, kind, f"{path.name}:{node.lineno} {target.id}"


def _given_secrets(args: Sequence[str], stdin: str | None) -> Iterator[tuple[str, str, str]]:
    """(value, kind, option) of each secret in the arguments of a ``loops-bridge`` command."""

    def value(given: str) -> str:
        return (stdin or "").splitlines()[0] if given == "-" and stdin else given

    options = (
        ("--api-key", API_KEY),
        ("--signing-secret", SIGNING_SECRET),
        ("--loops-webhook-secret", SIGNING_SECRET),
    )
    for option, kind in options:
        for i, arg in enumerate(args[:-1]):
            if arg == option:
                yield value(args[i + 1]), kind, option
    positional = [a for a in args if not a.startswith("--")]
    # endpoints add-secret|remove-secret|set-stripe-key ID SECRET;
    # accounts|connections loops-webhook NAME add-secret|remove-secret SECRET
    if positional[:1] == ["endpoints"] and len(positional) >= 4:
        kind = API_KEY if positional[1] == "set-stripe-key" else SIGNING_SECRET
        if positional[1] in ("add-secret", "remove-secret", "set-stripe-key"):
            yield value(positional[3]), kind, positional[1]
    if positional[:1] in (["accounts"], ["connections"]) and len(positional) >= 5:
        if positional[1] == "loops-webhook" and positional[3] in ("add-secret", "remove-secret"):
            yield value(positional[4]), SIGNING_SECRET, f"loops-webhook {positional[3]}"


# -- the session ----------------------------------------------------------------------------


@dataclass
class Scanned:
    """What one :func:`check` searched, and what it found."""

    texts: list[Text] = field(default_factory=list)
    leaks: list[Leak] = field(default_factory=list)

    def categories(self) -> Counter[str]:
        return Counter(t.category for t in self.texts)


class _Session:
    """The state of the test session: the scanner, and the texts of the current test."""

    def __init__(self) -> None:
        self.scanner = Scanner()
        self.test = ""
        self.tests = 0
        self.basetemp: Path | None = None
        self._pending: list[Text] = []
        self._records: list[str] = []
        self._files: dict[Path, int] = {}  # log file -> how much of it was read
        self._keys: dict[Path, tuple[int, int]] = {}  # key file -> (mtime, size) when read
        self._lock = threading.Lock()

    def learned(self, how: str) -> str:
        return f"{how} in {self.test}" if self.test else how

    def text(self, category: str, where: str, body: str) -> None:
        if body:
            with self._lock:
                self._pending.append(Text(category, where, body, self.test))

    def record(self, line: str) -> None:
        with self._lock:
            self._records.append(line)

    def watch(self, path: Path) -> None:
        with self._lock:
            self._files.setdefault(Path(path), 0)

    def check(self) -> Scanned:
        self._read_key_files()
        with self._lock:
            texts, self._pending = self._pending, []
            records, self._records = self._records, []
        texts += self._read_log_files()
        if records:
            where = "the log records of the test process"
            texts.append(Text("log record", where, "\n".join(records), self.test))
        return Scanned(texts, self.scanner.scan(texts))

    def _read_log_files(self) -> list[Text]:
        found = []
        for path, done in list(self._files.items()):
            try:
                with path.open("rb") as file:
                    file.seek(done)
                    data = file.read()
            except FileNotFoundError:
                continue
            self._files[path] = done + len(data)
            if data:
                where = f"the log file {self._shown(path)}"
                found.append(Text("log file", where, data.decode(errors="replace"), self.test))
        return found

    def _read_key_files(self) -> None:
        if self.basetemp is None or not self.basetemp.exists():
            return
        for path in [*self.basetemp.rglob("*.key"), *self.basetemp.rglob("*.key.old")]:
            try:
                stat = path.stat()
                if self._keys.get(path) == (stat.st_mtime_ns, stat.st_size):
                    continue
                self._keys[path] = (stat.st_mtime_ns, stat.st_size)
                lines = path.read_text().split()
            except (OSError, UnicodeDecodeError):
                continue
            for key in lines:
                self.scanner.secret(key, SECRET_KEY, f"the key file {self._shown(path)}")

    def _shown(self, path: Path) -> str:
        if self.basetemp is not None and path.is_relative_to(self.basetemp):
            return str(path.relative_to(self.basetemp))
        return str(path)


_session = _Session()


def secret(value: str, kind: str, learned: str = "a test") -> None:
    """Treat ``value`` as a secret of ``kind`` from now on."""
    _session.scanner.secret(value, kind, _session.learned(learned))


def text(category: str, where: str, body: str) -> None:
    """Search ``body``, something the bridge showed, for secrets when the test ends."""
    _session.text(category, where, body)


def watch(path: Path) -> None:
    """Search what is written to the log file at ``path`` from now on, after each test."""
    _session.watch(path)


def environment(env: Mapping[str, str]) -> None:
    """Learn the secrets in the environment of a bridge process."""
    if password := env.get("BRIDGE_ADMIN_PASSWORD", ""):
        secret(password, ADMIN_PASSWORD, "BRIDGE_ADMIN_PASSWORD")
    for key in env.get("BRIDGE_SECRET_KEY", "").split(","):
        secret(key, SECRET_KEY, "BRIDGE_SECRET_KEY")
    if url := env.get("BRIDGE_DATABASE_URL", ""):
        from sqlalchemy.engine import make_url

        try:
            password = make_url(url).password
        except Exception:  # not a URL: the bridge says so, and there is no password in it
            password = None
        if password:
            secret(str(password), DATABASE_PASSWORD, "BRIDGE_DATABASE_URL")
    if url := env.get("BRIDGE_ALERT_WEBHOOK_URL", ""):  # its path is its secret
        secret(urlsplit(url).path.rsplit("/", 1)[-1], ALERT_CREDENTIAL, "BRIDGE_ALERT_WEBHOOK_URL")
    if password := urlsplit(env.get("BRIDGE_SMTP_URL", "")).password:
        secret(password, ALERT_CREDENTIAL, "BRIDGE_SMTP_URL")


def process(args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
    """A ``loops-bridge`` server process was started with ``args``, logging to ``log``."""
    environment(env)
    for value, kind, option in _given_secrets(args, None):
        secret(value, kind, f"loops-bridge {args[0]} {option}")
    watch(log)


def command(args: Sequence[str], env: Mapping[str, str], stdin: str | None, done: Any) -> None:
    """A ``loops-bridge`` command ran with ``args`` (and ``stdin``): learn the secrets given
    to it, and search its stdout and stderr."""
    environment(env)
    name = "loops-bridge " + " ".join(args[:2])  # never more: a secret may follow
    for value, kind, option in _given_secrets(args, stdin):
        secret(value, kind, f"{name} {option}")
    text("CLI", f"the stdout of {name}", done.stdout or "")
    text("CLI", f"the stderr of {name}", done.stderr or "")


def known() -> Counter[str]:
    """How many secrets of each kind the session knows."""
    return _session.scanner.kinds()


def check() -> Scanned:
    """Search the texts of the current test so far (log files up to now) for every secret
    known; what this finds also fails the session."""
    return _session.check()


# -- HTTP -----------------------------------------------------------------------------------

_FORM_FIELDS = {"password": ADMIN_PASSWORD, "api_key": API_KEY, "secret": SIGNING_SECRET}


def _request(request: httpx.Request) -> None:
    """Learn the secrets a request gives: admin form fields, a Bearer header."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        secret(credential, API_KEY, f"a Bearer header to {request.url.path}")
    if "x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return
    try:
        body = request.content
    except httpx.RequestNotRead:
        return
    for name, value in parse_qsl(body.decode(errors="replace"), keep_blank_values=True):
        if name in _FORM_FIELDS:
            secret(value, _FORM_FIELDS[name], f"the {name} field posted to {request.url.path}")


def _response(response: httpx.Response) -> None:
    """Search the status, the headers and the body of ``response`` (and of the redirects
    before it); learn the session cookies it sets."""
    from bridge.admin.auth import COOKIE

    for answer in [*response.history, response]:
        request = answer.request
        lines = [f"HTTP {answer.status_code} {answer.reason_phrase}"]
        for name, value in answer.headers.multi_items():
            if name == "set-cookie" and value.startswith(f"{COOKIE}="):
                cookie = value.split(";", 1)[0].removeprefix(f"{COOKIE}=").strip('"')
                secret(cookie, SESSION_COOKIE, f"the Set-Cookie of {request.url.path}")
                value = value.replace(cookie, "«session cookie»", 1) if cookie else value
            lines.append(f"{name}: {value}")
        try:
            lines += ["", answer.content.decode(errors="replace")]
        except httpx.ResponseNotRead:
            pass
        where = f"the HTTP {answer.status_code} answer to {request.method} {request.url.path}"
        text("HTTP", where, "\n".join(lines))


def _spy_on_httpx(undo: list[Callable[[], None]]) -> None:
    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    @functools.wraps(sync_send)
    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        _request(request)
        response = sync_send(self, request, **kwargs)
        _response(response)
        return response

    @functools.wraps(async_send)
    async def asend(
        self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        _request(request)
        response = await async_send(self, request, **kwargs)
        _response(response)
        return response

    httpx.Client.send, httpx.AsyncClient.send = send, asend  # type: ignore[method-assign]

    def restore() -> None:
        httpx.Client.send, httpx.AsyncClient.send = sync_send, async_send  # type: ignore[method-assign]

    undo.append(restore)


# -- the bridge inside the test process ------------------------------------------------------


# Loggers that bridge.logs.configure keeps to warnings: in the test process, httpx's lines
# would be the requests the tests make.
_QUIET = ("httpx", "alembic")


class _Records(logging.Handler):
    """Every log record of the test process, as the bridge's JSON log format writes it."""

    def __init__(self) -> None:
        from bridge.logs import JSONFormatter

        super().__init__(logging.INFO)
        self.setFormatter(JSONFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _session.record(self.format(record))
        except Exception:
            self.handleError(record)


def _spy(owner: Any, name: str, learn: Callable[..., None], undo: list) -> None:
    """Call ``learn`` with the arguments of each call of ``owner.name``, then the original."""
    original = getattr(owner, name)  # an AttributeError here: the spy needs updating

    @functools.wraps(original)
    def spy(*args: Any, **kwargs: Any) -> Any:
        learn(*args, **kwargs)
        return original(*args, **kwargs)

    setattr(owner, name, spy)
    undo.append(lambda: setattr(owner, name, original))


def _spy_on_the_bridge(undo: list[Callable[[], None]]) -> None:
    from bridge import vault
    from bridge.admin import auth

    def encrypting(vault_: vault.Vault, plain: str) -> None:
        for key in vault_.keys:
            secret(key, SECRET_KEY, "a vault's keys")
        kind = SIGNING_SECRET if plain.startswith("whsec_") else API_KEY
        secret(plain, kind, "a value the vault encrypted")

    def hashing(password: str, salt: bytes | None = None) -> None:
        secret(password, ADMIN_PASSWORD, "a password the admin hashed")

    _spy(vault.Vault, "encrypt", encrypting, undo)
    _spy(auth, "hash_password", hashing, undo)


# -- the pytest plugin ----------------------------------------------------------------------


@functools.cache
def _constants() -> list[tuple[str, str, str]]:
    return list(constants(Path(__file__).parent))


class _Plugin:
    """The leak check of one pytest process. Under pytest-xdist each worker searches the texts
    of its own tests for the secrets it learned, and hands its :class:`Tally` to the
    controller, which runs no test: the controller adds them up, prints the one summary line
    and fails the session on any worker's leak."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._controller = False  # xdist's controller: its workers run the tests
        self._workers: list[Tally] = []

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._controller = session.config.pluginmanager.has_plugin("dsession")
        if self._controller:
            return
        factory = getattr(session.config, "_tmp_path_factory", None)
        _session.basetemp = factory.getbasetemp() if factory is not None else None
        workerinput = getattr(session.config, "workerinput", {})
        for value, kind, where in workerinput.get("leak check constants") or _constants():
            _session.scanner.secret(value, kind, where)
        _spy_on_httpx(self._undo)
        _spy_on_the_bridge(self._undo)
        records, root = _Records(), logging.getLogger()
        root.addHandler(records)
        self._undo.append(lambda: root.removeHandler(records))
        # The levels of every loops-bridge process (bridge.logs.configure).
        quiet = [(logging.getLogger(name), logging.WARNING) for name in _QUIET]
        for logger, level in [(root, logging.INFO), *quiet]:
            before = logger.level
            logger.setLevel(level)
            self._undo.append(lambda logger=logger, before=before: logger.setLevel(before))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[object]:
        _session.test = item.nodeid
        try:
            return (yield)
        finally:
            _session.check()
            _session.tests += 1
            _session.test = ""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self._controller:
            return  # the worker that ran the test has searched its output
        # A report repeats the sections of the phases before it: take this phase's only.
        for name, content in report.sections:
            if name in (f"Captured stdout {report.when}", f"Captured stderr {report.when}"):
                where = f"{name[len('Captured ') :]} of the test process"
                _session.text("captured output", where, content)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """An xdist worker starts: it takes the test modules' constants from the controller,
        rather than each parsing every module again."""
        node.workerinput["leak check constants"] = _constants()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        """An xdist worker finished (its pytest_sessionfinish ran): take its tally."""
        if tally := getattr(node, "workeroutput", {}).get("leak check"):
            self._workers.append(Tally(**tally))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self._controller:
            _session.test = "(after the last test)"
            _session.check()
        tally = self._tally()
        if workeroutput := getattr(session.config, "workeroutput", None):
            workeroutput["leak check"] = asdict(tally)
        if tally.leaks and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _tally(self) -> Tally:
        if self._controller:
            return sum(self._workers, Tally())
        return _session.scanner.tally(_session.tests)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tally = self._tally()
        workers = f" on {len(self._workers)} workers" if self._controller else ""
        if not tally.leaks:
            terminalreporter.write_line(f"leak check: {tally.summary()}{workers}: no secret found.")
            return
        terminalreporter.section("secrets leaked", sep="=", red=True, bold=True)
        for leak in tally.leaks[:50]:
            terminalreporter.write_line(str(Leak(**leak)))
        if len(tally.leaks) > 50:
            terminalreporter.write_line(f"... and {len(tally.leaks) - 50} more")
        terminalreporter.write_line(
            f"leak check: {len(tally.leaks)} leaks in {tally.summary()}{workers} (tests/leaks.py)",
            red=True,
        )

    def pytest_unconfigure(self) -> None:
        while self._undo:
            self._undo.pop()()


def install(config: pytest.Config) -> None:
    """Run the leak check in this pytest session (called by tests/conftest.py)."""
    if not config.pluginmanager.has_plugin("loops-bridge-leaks"):
        config.pluginmanager.register(_Plugin(), "loops-bridge-leaks")
