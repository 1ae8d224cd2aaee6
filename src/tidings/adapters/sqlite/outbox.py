"""The outbox in SQLite: a writer for the application's sqlite3 transaction, and a relay source.

Writing: `SQLiteOutbox.add` inserts one row through the application's own ``sqlite3``
connection, inside whatever transaction it has open, so the row commits or rolls back with the
business change. It is a plain (synchronous) call because the application's connection is.

Reading (`SQLiteOutboxSource`): SQLite runs one write transaction at a time, so rows commit in
``seq`` order and a relay that reads unrelayed rows by ``seq`` publishes them in commit order.
Several relays may run against one file (on one machine): the one holding an exclusive lock on
a side file (``<db>.<table>.relay-lock``, released by the kernel when its process dies, even
by SIGKILL) fetches; the others return nothing and wait to take over. Relays wake when any
connection, in this process or another, commits: they watch ``PRAGMA data_version`` every
``poll_interval`` seconds, and an `add` in this process pokes the sources of its file so they
watch more closely until the commit lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from tidings.adapters.sqlite.connection import SQLiteThread, Synchronous, path_from_url
from tidings.events import Event
from tidings.eventstore.base import DEFAULT_MAX_EVENT_BYTES
from tidings.lifecycle import Resource
from tidings.outbox.ports import OutboxMessage, OutboxSource, OutboxStatus
from tidings.outbox.rows import DEFAULT_TABLE, message, outbox_row
from tidings.outbox.schema import SQLiteSQL

__all__ = ["SQLiteOutbox", "SQLiteOutboxSource"]

_PURGE_BATCH: Final = 1000
_EAGER_SECONDS: Final = 0.2
_EAGER_INTERVAL: Final = 0.001

# Sources open in this process, by database file, so an add can poke them.
_sources: Final[dict[str, weakref.WeakSet[SQLiteOutboxSource]]] = {}
_sources_lock: Final = threading.Lock()


def _now_text() -> str:
    return datetime.now(UTC).isoformat()


def _database_file(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return os.path.realpath(row[2]) if row and row[2] else ""


class SQLiteOutbox:
    """Writes outbox rows through the application's sqlite3 connection.

    Args:
        table: The outbox table's name.
        max_event_bytes: The largest encoded event accepted.
    """

    def __init__(
        self, *, table: str = DEFAULT_TABLE, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    ) -> None:
        self.sql = SQLiteSQL(table)
        self.max_event_bytes = max_event_bytes
        self._insert = self.sql.insert()
        # By id(): connections take no weak references. A reused id pokes the wrong
        # sources at worst, which only makes them poll sooner.
        self._files: dict[int, str] = {}

    def create_table(self, conn: sqlite3.Connection) -> None:
        """Create the table and its indexes if missing (in the connection's transaction)."""
        for statement in self.sql.ddl():
            conn.execute(statement)

    def add(
        self,
        conn: sqlite3.Connection,
        event: Event,
        *,
        topic: str,
        key: str | None = None,
        aggregate_type: str | None = None,
        aggregate_id: str | None = None,
    ) -> None:
        """Insert ``event`` for ``topic`` in the connection's current transaction.

        It is published only if that transaction commits; see `tidings.outbox.rows.outbox_row`
        for the defaults of the key and the aggregate. Adding an event id twice raises the
        driver's ``sqlite3.IntegrityError`` (the id is unique).
        """
        row = outbox_row(
            event,
            topic=topic,
            key=key,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            max_event_bytes=self.max_event_bytes,
        )
        params = row.params()
        params["occurred_at"] = row.occurred_at.isoformat()
        conn.execute(self._insert, params)
        self._poke(conn)

    def _poke(self, conn: sqlite3.Connection) -> None:
        path = self._files.get(id(conn))
        if path is None:
            if len(self._files) > 1024:
                self._files.clear()
            path = self._files[id(conn)] = _database_file(conn)
        with _sources_lock:
            waiting = list(_sources.get(path, ()))
        for source in waiting:
            source.expect_commit()


def _lock_path(path: Path, table: str) -> Path:
    return path.with_name(f"{path.name}.{table}.relay-lock")


class SQLiteOutboxSource(Resource, OutboxSource):
    """Reads an SQLite outbox table for a relay.

    Args:
        path: The database file, or a ``sqlite:///relative.db`` / ``sqlite:////abs.db`` URL.
        table: The outbox table's name.
        retention: Seconds to keep relayed rows (marked with ``processed_at``); 0 deletes them
            as soon as they are relayed.
        poll_interval: Seconds between checks for commits by other connections.
        synchronous: SQLite's durability setting for marking rows relayed.
    """

    def __init__(
        self,
        path: str | Path = "tidings.db",
        *,
        table: str = DEFAULT_TABLE,
        retention: float = 0.0,
        poll_interval: float = 0.01,
        synchronous: Synchronous = "FULL",
    ) -> None:
        is_url = isinstance(path, str) and "://" in path
        self.path = path_from_url(path) if is_url else Path(path)  # type: ignore[arg-type]
        self.sql = SQLiteSQL(table)
        self.retention = retention
        self.poll_interval = poll_interval
        self._thread = SQLiteThread(self.path, synchronous=synchronous, name="tidings-outbox")
        self._lock_fd: int | None = None
        self._key = ""
        self._version: int | None = None
        self._eager_until = 0.0
        self._last_purge = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poked = asyncio.Event()
        self._fetch = self.sql.fetch()

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._thread.start()
        await self._thread.run(self._create, "create the outbox table")
        key = self._key = os.path.realpath(self.path)  # noqa: ASYNC240 (no I/O worth a thread)
        with _sources_lock:
            _sources.setdefault(key, weakref.WeakSet()).add(self)

    def _create(self, conn: sqlite3.Connection) -> None:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            for statement in self.sql.ddl():
                conn.execute(statement)

    async def _close(self) -> None:
        with _sources_lock:
            _sources.get(self._key, weakref.WeakSet()).discard(self)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the relay lock
            self._lock_fd = None
        await self._thread.close()

    def expect_commit(self) -> None:
        """Watch for commits closely for a moment (an add in this process is about to commit)."""
        # Already poked: skip the loop wake-up (a write to its self-pipe) per add of a burst.
        if self._poked.is_set():
            return
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._poked.set)

    def _holds_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        fd = os.open(_lock_path(self.path, self.sql.table), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    async def fetch(self, limit: int) -> Sequence[OutboxMessage]:
        """Return up to ``limit`` unrelayed rows by ``seq``; none unless this relay is active."""
        await self._ensure_open()
        if not self._holds_lock():
            return []
        version, rows = await self._thread.run(lambda conn: self._read(conn, limit), "fetch")
        self._version = version
        return [
            message(r[0], r[1], r[2], r[3], r[4], (r[5], r[6]), datetime.fromisoformat(r[7]))
            for r in rows
        ]

    def _read(self, conn: sqlite3.Connection, limit: int) -> tuple[int, list[tuple[Any, ...]]]:
        # data_version first: a commit after it wakes the next wait, so none is slept through.
        version = _data_version(conn)
        return version, conn.execute(self._fetch, (limit,)).fetchall()

    async def mark_relayed(self, messages: Sequence[OutboxMessage]) -> None:
        """Delete the rows (retention 0) or stamp ``processed_at``; durable on return."""
        if not messages:
            return
        await self._ensure_open()
        positions = [(m.position,) for m in messages]
        purge = self.retention > 0 and time.monotonic() - self._last_purge > 1.0
        await self._thread.run(lambda conn: self._mark(conn, positions, purge), "mark relayed")
        if purge:
            self._last_purge = time.monotonic()

    def _mark(self, conn: sqlite3.Connection, positions: list[tuple[int]], purge: bool) -> None:
        keep = self.retention > 0
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            if keep:
                stamp = _now_text()
                rows = [(stamp, seq) for (seq,) in positions]
                conn.executemany(self.sql.mark(keep=True), rows)
            else:
                conn.executemany(self.sql.mark(keep=False), positions)
            if purge:
                self._purge(conn)

    def _purge(self, conn: sqlite3.Connection) -> None:
        cutoff = datetime.fromtimestamp(time.time() - self.retention, UTC).isoformat()
        conn.execute(self.sql.purge(), (cutoff, _PURGE_BATCH))

    async def release(self, messages: Sequence[OutboxMessage]) -> None:
        """Nothing to undo: fetched rows stay unrelayed until marked."""

    async def wait(self, timeout: float) -> None:
        """Return once another connection committed (``data_version`` moved), or on timeout."""
        await self._ensure_open()
        deadline = time.monotonic() + timeout
        while (now := time.monotonic()) < deadline:
            version = await self._thread.run(_data_version, "poll")
            if self._version is not None and version != self._version:
                self._version = version
                return
            self._version = version
            if self._poked.is_set():
                self._poked.clear()
                self._eager_until = now + _EAGER_SECONDS
            eager = now < self._eager_until
            pause = _EAGER_INTERVAL if eager else self.poll_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(pause, max(deadline - now, 0))):
                    await self._poked.wait()

    async def status(self) -> OutboxStatus:
        """Return the backlog, the time of its oldest row, and the relayed rows kept."""
        await self._ensure_open()
        query = self.sql.status()
        backlog, oldest, relayed = await self._thread.run(
            lambda conn: conn.execute(query).fetchone(), "status"
        )
        when = None if oldest is None else datetime.fromisoformat(oldest)
        return OutboxStatus(backlog=backlog, oldest=when, relayed=relayed)


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])
