"""Secrets at rest: Loops API keys and signing secrets are stored encrypted.

The key comes from ``BRIDGE_SECRET_KEY`` or, when that is unset, from the key file
``secret.key`` in the bridge's data folder: beside the SQLite database file, or ``./data/``
for PostgreSQL. The first start creates that file, owner-only (0600) and atomically, in a
folder of its own (0700) if there is none, and logs where it is. Either place holds one key
or several, newest first (comma-separated in the variable, one a line in the file): the
newest encrypts, each of them decrypts. That is how ``loops-bridge rotate-secret-key``
changes the key without a moment in which a stored secret cannot be read.

Encryption is Fernet, from the ``cryptography`` package: AES-128-CBC with a random IV and
HMAC-SHA256 (https://github.com/fernet/spec). A copied database without the key reveals no
secret, and a token changed in the database is refused rather than decrypted to garbage.
The IV is random, so one secret is stored differently each time: the database cannot find
a row by its secret, and code compares secrets in Python.

A column typed :class:`EncryptedString` is encrypted on the way in and decrypted on the way
out, with the vault :func:`unlock` attached to the engine (``bridge.db.connect`` does this for
every command). The rest of the code reads and writes plain strings.

Errors are :class:`VaultError`, with a message for the operator: which key, what to do.
A message never contains a key.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.engine import URL, Dialect, Engine, make_url

__all__ = [
    "EncryptedString",
    "Rotated",
    "Vault",
    "VaultError",
    "attach",
    "key_path",
    "leave_no_copies",
    "new_key",
    "of",
    "rotate",
    "unlock",
]

log = logging.getLogger(__name__)

KEY_FILE = "secret.key"
SETTING = "BRIDGE_SECRET_KEY"
# Every encrypted column: (table, primary key, column).
STORED = (
    ("accounts", "id", "api_key"),
    ("secrets", "id", "value"),
    ("endpoints", "id", "stripe_api_key"),  # optional: NULL when the endpoint has none
    ("loops_webhook_secrets", "id", "value"),  # an account's Loops webhook secrets
)


class VaultError(Exception):
    """The key is missing, malformed or not the one the database was encrypted with."""


class Vault:
    """The keys of one database: the first encrypts, any of them decrypts."""

    def __init__(self, keys: Sequence[str], source: str, path: Path | None = None) -> None:
        self.keys = tuple(keys)
        self.source = source  # for messages: "BRIDGE_SECRET_KEY" or "the key file PATH"
        self.path = path  # the key file, if the keys came from one
        self._fernet = MultiFernet([Fernet(k) for k in self.keys])
        self._seen = _stamp(path)
        self._following = threading.Lock()
        # Each read of an account or a secret decrypts it: the delivery worker reads API keys
        # on every claim. A token never changes meaning, so its plaintext can be remembered.
        self._plain = lru_cache(maxsize=4096)(self._decrypt)

    def encrypt(self, plain: str) -> str:
        self._follow_key_file()
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        return self._plain(token)

    def opens(self, token: str) -> bool:
        try:
            self.decrypt(token)
        except VaultError:
            return False
        return True

    def _follow_key_file(self) -> None:
        """Take up the keys of a key file that changed since it was read: a
        ``rotate-secret-key`` run while this process runs. The file's keys come first (its
        newest encrypts), and the ones this process had still decrypt."""
        if self.path is None or _stamp(self.path) == self._seen:
            return
        with self._following:  # one thread reads the file; the others wait for its keys
            stamp = _stamp(self.path)
            if stamp == self._seen:
                return
            try:
                found = _read_key_file(self.path)
            except VaultError as exc:  # unreadable: keep the keys held, read it next time
                log.warning("%s", exc)
                return
            if found is not None and found.keys != self.keys[: len(found.keys)]:
                keys = (*found.keys, *(k for k in self.keys if k not in found.keys))
                self._fernet = MultiFernet([Fernet(k) for k in keys])
                self.keys = keys
                log.info("took up the new secret key from %s", self.path.absolute())
            self._seen = stamp  # only once its keys are in use

    def _decrypt(self, token: str) -> str:
        self._follow_key_file()
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise VaultError(
                f"A stored Loops API key or signing secret does not open with the key from "
                f"{self.source}. Stop serve and worker, and start them again: start-up says "
                "which key the database needs."
            ) from None


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def key_path(database_url: str | URL) -> Path:
    """The key file used when BRIDGE_SECRET_KEY is unset: beside a SQLite database file,
    else ``./data/secret.key``."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / KEY_FILE
    return Path("data") / KEY_FILE


# -- the vault of each engine --------------------------------------------------------------

_vaults: weakref.WeakKeyDictionary[Dialect, Vault] = weakref.WeakKeyDictionary()


def attach(engine: Engine, vault: Vault) -> None:
    _vaults[engine.dialect] = vault  # each engine has a dialect of its own


def of(bind: Engine | sa.Connection | Dialect) -> Vault:
    dialect = bind if isinstance(bind, Dialect) else bind.dialect
    found = _vaults.get(dialect)
    if found is None:
        raise VaultError(
            "No secret key is set up for this database connection: open it with "
            "bridge.db.connect(), which reads BRIDGE_SECRET_KEY or the key file."
        )
    return found


def unlock(engine: Engine, secret_key: str, *, encrypted: bool = True) -> Vault:
    """Load the key of the database of ``engine`` and attach it to the engine.

    ``secret_key`` is BRIDGE_SECRET_KEY's value; empty: the key file, created if missing.
    With ``encrypted`` (the schema stores secrets encrypted, as it does from revision 0003
    on), every stored secret must open with the key, and a missing key file is only
    created for a database that stores none. Without it (plain rows from before 0003, about
    to be encrypted by ``loops-bridge migrate``), nothing is checked."""
    if secret_key.strip():
        vault = Vault(_parse(secret_key, SETTING), SETTING)
    else:
        path = key_path(engine.url)
        vault = _read_key_file(path)
        if vault is None:
            if encrypted and _stored_tokens(engine):
                raise VaultError(
                    f"The database at {_where(engine)} stores encrypted Loops API keys and "
                    f"signing secrets, but {SETTING} is unset and there is no key file at "
                    f"{path.absolute()}. Put back the {KEY_FILE} backed up with this "
                    f"database, or set {SETTING} to the key it was encrypted with."
                )
            vault = _create_key_file(path)
    if encrypted:
        _check_opens(engine, vault)
    attach(engine, vault)
    return vault


@dataclass(frozen=True, slots=True)
class Rotated:
    accounts: int  # Loops API keys re-encrypted
    secrets: int  # signing secrets re-encrypted
    stripe_keys: int  # endpoints' Stripe API keys re-encrypted
    loops_webhook_secrets: int  # accounts' Loops webhook signing secrets re-encrypted
    key_file: Path | None  # where the new key is; None: BRIDGE_SECRET_KEY must be set to it
    old_key_file: Path | None  # where the previous key(s) are kept


def rotate(
    engine: Engine, key: str, *, before_commit: Callable[[Rotated], None] | None = None
) -> Rotated:
    """Re-encrypt every stored secret under ``key`` (from :func:`new_key`), in one
    transaction; ``before_commit`` is called in it, once every row is rewritten (an
    exception from it changes nothing).

    With a key file, the file holds the new key and the current ones while the transaction
    runs, so that every stored secret can be read whatever happens; after the commit it
    holds only the new key, and the current ones are kept in ``secret.key.old`` (a backup
    of the database made before now needs them). With BRIDGE_SECRET_KEY, the caller shows
    the new key to the operator (in ``before_commit``), who sets the variable to it."""
    current = of(engine)
    path = current.path
    old = None if path is None else path.with_name(path.name + ".old")
    if path is not None:
        _write_key_file(path, (key, *current.keys))
    try:
        with engine.begin() as conn:
            counts = _reencrypt(conn, current, Vault((key,), current.source))
            rotated = Rotated(*counts, key_file=path, old_key_file=old)
            if before_commit is not None:
                before_commit(rotated)
    except BaseException:
        if path is not None:
            _write_key_file(path, current.keys)  # as it was
        raise
    if path is not None and old is not None:
        _write_key_file(old, current.keys)
        _write_key_file(path, (key,))
    attach(engine, Vault((key,), current.source, path))
    leave_no_copies(engine)
    return rotated


def leave_no_copies(engine: Engine) -> None:
    """After secrets were rewritten: on SQLite, move the write-ahead log into the database
    and empty it, so that their former values (plain, or under a former key) stay in
    neither file. The database zeroes what it frees (``secure_delete``, see bridge/db.py);
    the log keeps old pages until it is emptied. A process that still reads can keep it
    from emptying now; then it is deleted when the last connection closes."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


# -- the column type -----------------------------------------------------------------------


class EncryptedString(sa.TypeDecorator[str]):
    """A string stored as a Fernet token, with the vault of the engine it goes through.

    Stored as VARCHAR, unbounded on SQLite and PostgreSQL alike, so the schema is the one
    that held plain strings before revision 0003. Never compare or sort such a column in
    SQL: a value is encrypted with a random IV, so ``column == secret`` is never true.
    Select the rows and compare in Python."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else of(dialect).encrypt(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else of(dialect).decrypt(value)


# -- internals ------------------------------------------------------------------------------


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _parse(text: str, source: str) -> tuple[str, ...]:
    keys = tuple(k for k in text.replace(",", "\n").split() if k)
    if not keys:
        raise VaultError(f"{source} holds no key.")
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise VaultError(
                f"{source} does not hold a valid key: a key is 44 characters of URL-safe "
                "base64, as `loops-bridge rotate-secret-key` prints one, and several are "
                "separated by commas (in a key file, one a line), newest first."
            ) from None
    return keys


def _stamp(path: Path | None) -> tuple[int, int] | None:
    """When and how the key file last changed (None: no file)."""
    try:
        found = path.stat() if path is not None else None
    except OSError:
        return None
    return (found.st_mtime_ns, found.st_ino) if found else None


def _read_key_file(path: Path) -> Vault | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VaultError(
            f"The key file {path.absolute()} cannot be read: {exc.strerror}."
        ) from None
    source = f"the key file {path.absolute()}"
    return Vault(_parse(text, source), source, path)


def _create_key_file(path: Path) -> Vault:
    """A new key in a new file at ``path``; if another process made one first, that one."""
    key = new_key()
    try:
        _write_key_file(path, (key,), exclusive=True)
    except FileExistsError:
        found = _read_key_file(path)
        assert found is not None
        return found
    log.warning(
        "created a new secret key at %s: back it up with the database; without it the "
        "stored API keys and signing secrets cannot be read",
        path.absolute(),
    )
    return Vault((key,), f"the key file {path.absolute()}", path)


def _write_key_file(path: Path, keys: Sequence[str], *, exclusive: bool = False) -> None:
    """Write ``keys`` to ``path``, owner-only, all at once: readers see the old file or the
    new one, never a part. ``exclusive``: fail with FileExistsError if ``path`` exists."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data folder
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write("\n".join(keys) + "\n")
                file.flush()
                os.fsync(file.fileno())
            if exclusive:
                os.link(temporary, path)  # atomic, and never over an existing file
            else:
                os.replace(temporary, path)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(temporary)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new name survives a crash
        finally:
            os.close(directory)
    except FileExistsError:
        raise
    except OSError as exc:
        raise VaultError(
            f"The key file {path.absolute()} cannot be written: {exc.strerror}. Make its "
            f"folder writable by this user, or set {SETTING}."
        ) from None


def _stored_tokens(conn_or_engine: Engine | sa.Connection) -> list[str]:
    """Every stored encrypted value, as it is in the database."""
    tokens: list[str] = []

    def read(conn: sa.Connection) -> None:
        for table, _, column in STORED:
            tokens.extend(
                conn.execute(
                    sa.select(sa.column(column))
                    .select_from(sa.table(table))
                    .where(sa.column(column).is_not(None))
                ).scalars()
            )

    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            read(conn)
    else:
        read(conn_or_engine)
    return tokens


def _check_opens(engine: Engine, vault: Vault) -> None:
    tokens = _stored_tokens(engine)
    refused = sum(not vault.opens(token) for token in tokens)
    if not refused:
        return
    where = f"the database at {_where(engine)}"
    if refused == len(tokens):
        if vault.path is not None:
            fix = (
                f"Put back the {KEY_FILE} backed up with this database (after a "
                f"`loops-bridge rotate-secret-key`, the previous key is in {KEY_FILE}.old), "
                f"or set {SETTING} to the key it was encrypted with."
            )
        else:
            fix = (
                f"Set {SETTING} to the key this database was encrypted with (while it "
                f"changes, give both, newest first: {SETTING}=NEW,OLD), or unset it to use "
                f"the key file {key_path(engine.url).absolute()}."
            )
        raise VaultError(
            f"The key from {vault.source} does not open the Loops API keys and signing "
            f"secrets stored in {where}: it is not the key they were encrypted with. {fix}"
        )
    raise VaultError(
        f"{refused} of the {len(tokens)} Loops API keys and signing secrets stored in {where} "
        f"do not open with the key from {vault.source}: they were written with another key, "
        "by a serve or worker still running during `loops-bridge rotate-secret-key`. Add that "
        f"key after the current one (in {SETTING}, comma-separated; in {KEY_FILE}, on the "
        "next line), start again, and run `loops-bridge rotate-secret-key`."
    )


def _reencrypt(conn: sa.Connection, current: Vault, new: Vault) -> tuple[int, ...]:
    """Every stored secret under ``new``; how many of each of :data:`STORED`."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, before reading
    else:
        tables = ", ".join(table for table, _, _ in STORED)
        conn.exec_driver_sql(f"LOCK TABLE {tables} IN EXCLUSIVE MODE")
    counts = []
    for table, key, column in STORED:
        rows = sa.table(table, sa.column(key), sa.column(column))
        found = conn.execute(
            sa.select(rows.c[key], rows.c[column]).where(rows.c[column].is_not(None))
        ).all()
        for row_id, token in found:
            conn.execute(
                sa.update(rows)
                .where(rows.c[key] == row_id)
                .values({column: new.encrypt(current.decrypt(token))})
            )
        counts.append(len(found))
    return tuple(counts)
