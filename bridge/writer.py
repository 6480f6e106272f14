"""The inbox's writer: a process of its own that inserts batches of deliveries.

Why a process, not a thread: the database work for a burst of webhooks (SQLite inserting a
7 KB body and its index entries, about 60 us a row) would otherwise share one interpreter
lock with the event loop. A writer thread has to win that lock back from the busy loop after
every call into the driver, so each batch waited for the loop, and the answers to Stripe
with it (measured with bench/ingest.py). Here the loop only hands a batch over a pipe and
is woken when the answer is back.

The protocol, over a socket pair between these two processes only: each message is its
length (4 bytes, big-endian) and a pickle. The inbox sends a list of rows (dicts of the
``deliveries`` columns) and gets ``("ok", {(endpoint_id, event_id): id})`` for the rows that
were new, or ``("error", message)``. One batch at a time. The process ends when the socket
closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import pickle
import signal
import socket
import struct
from collections import deque
from typing import Any

import orjson

__all__ = ["StorageUnavailable", "WriterProcess"]

NewIds = dict[tuple[str, str], int]


class StorageUnavailable(Exception):
    """The database could not take the write; the sender should retry later."""


class WriterProcess:
    """The inbox's side: starts the process on first use, and again if it died."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._process: Any = None
        self._socket: socket.socket | None = None
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._waiting: deque[asyncio.Future[NewIds]] = deque()
        self._setting_up = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        ours, theirs = socket.socketpair()
        self._process = context.Process(
            target=serve, args=(theirs, self._database_url), name="loops-bridge-writer"
        )
        self._process.daemon = True
        self._process.start()
        theirs.close()
        self._socket, self._stream = ours, None

    async def write(self, rows: list[dict]) -> NewIds:
        """Insert ``rows``; the ids of those that were new. Several writes may wait at once:
        the process answers them in order."""
        async with self._setting_up:  # two batches may be on their way at once
            if self._socket is None or not self._process.is_alive():
                await self.close()
                self.start()
            if self._stream is None:
                self._stream = await asyncio.open_unix_connection(sock=self._socket)
        answer: asyncio.Future[NewIds] = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        message = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
        self._stream[1].write(_LENGTH.pack(len(message)) + message)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_answers(self._stream[0]))
        return await answer

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        while self._waiting:
            try:
                (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                kind, value = pickle.loads(await reader.readexactly(size))
            except (OSError, asyncio.IncompleteReadError) as exc:
                failed = StorageUnavailable(f"the writer process stopped ({exc or 'no answer'})")
                while self._waiting:
                    self._waiting.popleft().set_exception(failed)
                await self.close()
                return
            answer = self._waiting.popleft()
            if kind == "error":
                answer.set_exception(StorageUnavailable(value))
            else:
                answer.set_result(value)

    async def close(self) -> None:
        """Stop the process: it finishes the batch it has and exits when the socket closes."""
        stream, sock, process = self._stream, self._socket, self._process
        self._stream = self._socket = self._process = None
        if stream is not None:
            stream[1].close()
            with contextlib.suppress(OSError):
                await stream[1].wait_closed()
        elif sock is not None:
            sock.close()
        if process is not None:
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.kill()


_LENGTH = struct.Struct("!I")


def _read(channel: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = channel.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def serve(channel: socket.socket, database_url: str) -> None:
    """The writer process: insert each batch it is sent, until the other end closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    from bridge import db, logs, settings

    logs.configure(settings.load().log_format)  # the parent's environment, inherited

    engine = db.connect(database_url, create_schema=False)  # the parent owns the schema
    batches = _BATCH_INSERT[engine.dialect.name]()
    connection: Any = None
    while True:
        try:
            (size,) = _LENGTH.unpack(_read(channel, _LENGTH.size))
            rows = pickle.loads(_read(channel, size))
        except (EOFError, OSError):
            return
        try:
            if connection is None:
                connection = batches.autocommit(engine.raw_connection())
            cursor = connection.cursor()
            answer: tuple[str, Any] = ("ok", batches.insert_batch(cursor, rows))
            cursor.close()
        except Exception as exc:
            if connection is not None:
                connection.invalidate()  # not back into the pool: it may be broken
                connection = None
            answer = ("error", f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        message = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        channel.sendall(_LENGTH.pack(len(message)) + message)


_COLUMNS = (
    "endpoint_id", "event_id", "event_type", "occurred_at", "email", "payload", "status",
    "reason", "attempts", "received_at", "queued_at", "next_attempt_at", "finished_at",
)  # fmt: skip


class _SQLite:
    """Batch insert for SQLite: one multi-row INSERT, committed as it runs, then the new
    rows as one JSON value. The ids of one INSERT are consecutive (it holds the write lock
    throughout), and ``changes()`` and ``last_insert_rowid()`` belong to this connection,
    so other writers cannot be mistaken for this batch."""

    _NEW_ROWS = (
        "SELECT json_group_array(json_array(id, endpoint_id, event_id)) FROM deliveries "
        "WHERE changes() > 0 AND id BETWEEN last_insert_rowid() - changes() + 1 "
        "AND last_insert_rowid()"
    )

    @staticmethod
    def autocommit(connection: Any) -> Any:
        connection.driver_connection.isolation_level = None
        return connection

    def insert_batch(self, cursor: Any, rows: list[dict]) -> dict[tuple[str, str], int]:
        values = ", ".join(["(" + ", ".join("?" * len(_COLUMNS)) + ")"] * len(rows))
        cursor.execute(
            f"INSERT INTO deliveries ({', '.join(_COLUMNS)}) VALUES {values} "
            "ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            [row[c] for row in rows for c in _COLUMNS],
        )
        if cursor.rowcount == len(rows):  # the usual case, no repeats: ids follow row order
            first = cursor.lastrowid - len(rows) + 1
            return {(row["endpoint_id"], row["event_id"]): first + i for i, row in enumerate(rows)}
        (found,) = cursor.execute(self._NEW_ROWS).fetchone()
        return {(endpoint, event): new_id for new_id, endpoint, event in orjson.loads(found)}


class _PostgreSQL:
    """Batch insert for PostgreSQL: one statement; RETURNING gives exactly this batch's
    rows even with other processes inserting at the same time."""

    _INSERT = (
        f"INSERT INTO deliveries ({', '.join(_COLUMNS)}) SELECT "
        + ", ".join("convert_to(payload, 'UTF8')" if c == "payload" else c for c in _COLUMNS)
        + " FROM jsonb_to_recordset(%s::jsonb) AS r(endpoint_id text, event_id text, "
        "event_type text, occurred_at bigint, email text, payload text, status text, "
        "reason text, attempts int, received_at float8, queued_at float8, "
        "next_attempt_at float8, finished_at float8) "
        "ON CONFLICT (endpoint_id, event_id) DO NOTHING RETURNING id, endpoint_id, event_id"
    )

    @staticmethod
    def autocommit(connection: Any) -> Any:
        connection.driver_connection.autocommit = True
        return connection

    def insert_batch(self, cursor: Any, rows: list[dict]) -> dict[tuple[str, str], int]:
        batch = orjson.dumps([{**row, "payload": row["payload"].decode()} for row in rows])
        cursor.execute(self._INSERT, (batch.decode(),))
        return {(endpoint, event): new_id for new_id, endpoint, event in cursor.fetchall()}


_BATCH_INSERT = {"sqlite": _SQLite, "postgresql": _PostgreSQL}
