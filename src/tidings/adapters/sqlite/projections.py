"""Read models in SQLite: projection tables, checkpoints and leases in one database file.

A batch is one ``BEGIN IMMEDIATE`` transaction on the read model's connection thread: first
the fenced checkpoint update (it must find this runner's lease and the expected position,
else nothing is written), then every handler, then COMMIT. A crash anywhere before COMMIT
leaves neither the rows nor the checkpoint; after it, both. That holds with
``synchronous=NORMAL`` (the default here) too: a power loss may roll back the last commits, but
it rolls back their checkpoint with them, and the events are applied again, once.

The read model is usually its own file, apart from the event store. Readers open the file and
query the views named after the projection's ``tables``, which point at the active version's
tables (or use `SQLiteReadModel.fetchall`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tidings.adapters.sqlite import checkpoints as q
from tidings.adapters.sqlite.connection import SQLiteThread, Synchronous, path_from_url
from tidings.errors import ConfigurationError
from tidings.eventstore.ports import RecordedEvent
from tidings.lifecycle import Resource
from tidings.projections.errors import HandlerError, ProjectionError
from tidings.projections.ports import (
    Batch,
    Failure,
    ProjectionKey,
    ProjectionState,
    ReadModel,
    Status,
)
from tidings.projections.projector import Projection

__all__ = ["SQLiteReadModel", "SQLiteTx"]


def _now_us() -> int:
    return time.time_ns() // 1000


class SQLiteTx:
    """A handler's handle on the open read-model transaction (a sqlite3 connection).

    Attributes:
        key: The projection version written to.
        record: The event being applied.
        connection: The sqlite3 connection, inside the batch's transaction: never commit it.
    """

    def __init__(self, connection: sqlite3.Connection, key: ProjectionKey) -> None:
        self.connection = connection
        self.key = key
        self.record: RecordedEvent | None = None

    def table(self, name: str) -> str:
        """Return the quoted name of this version's table ``name`` (``"name_v2"``)."""
        return q.quoted(f"{name}_v{self.key.version}")

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        """Run one statement in the batch's transaction."""
        return self.connection.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> sqlite3.Cursor:
        """Run one statement for each row, in the batch's transaction."""
        return self.connection.executemany(sql, rows)


class SQLiteReadModel(Resource, ReadModel):
    """Projection tables and their registry in a SQLite file (``sqlite:///views.db``).

    Args:
        path: The database file, or a ``sqlite:///relative.db`` / ``sqlite:////abs.db`` URL.
        synchronous: SQLite's durability setting; ``NORMAL`` keeps exactly-once effects (see
            the module docstring) and commits faster than ``FULL``.
    """

    def __init__(self, path: str | Path = "views.db", *, synchronous: Synchronous = "NORMAL"):
        is_url = isinstance(path, str) and "://" in path
        self.path = path_from_url(str(path)) if is_url else Path(path)
        self._conn = SQLiteThread(self.path, synchronous=synchronous, name="tidings-readmodel")
        self._reader = SQLiteThread(self.path, read_only=True, name="tidings-readmodel-reader")
        self.before_commit: Callable[[], None] | None = None
        """Fault injection: called on the connection's thread just before COMMIT."""

    async def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._conn.start()
        await self._conn.run(lambda c: c.executescript(q.SCHEMA), "create registry")
        await self._reader.start()

    async def _close(self) -> None:
        await self._reader.close()
        await self._conn.close()

    async def _run(self, work: Callable[[sqlite3.Connection], Any], action: str) -> Any:
        await self._ensure_open()
        return await self._conn.run(work, action)

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a query on a read-only connection (readers: query the views) and return rows."""
        await self._ensure_open()
        rows: list[tuple[Any, ...]] = await self._reader.run(
            lambda c: c.execute(sql, params).fetchall(), "query"
        )
        return rows

    # -- registry and leases ------------------------------------------------------------------

    async def register(self, key: ProjectionKey) -> ProjectionState:
        """Create the entry of a version when missing; the first of a name becomes active."""
        state: ProjectionState = await self._run(
            lambda c: _in_transaction(c, lambda: q.register(c, key, _now_us())), "register"
        )
        return state

    async def lookup(self, key: ProjectionKey) -> ProjectionState | None:
        """Return a version's entry, or None."""
        found: ProjectionState | None = await self._run(lambda c: q.state(c, key), "read state")
        return found

    async def states(self) -> list[ProjectionState]:
        """Return every entry, by name and version."""
        found: list[ProjectionState] = await self._run(q.states, "read states")
        return found

    async def set_status(
        self, key: ProjectionKey, status: Status, *, error: str | None = None
    ) -> None:
        """Mark a version running (clearing its error) or failed with an error."""
        await self._run(lambda c: q.set_status(c, key, status, error, _now_us()), "set status")

    async def activate(self, key: ProjectionKey) -> None:
        """Make this version the active one and point the views at its tables."""
        await self._run(
            lambda c: _in_transaction(c, lambda: q.activate(c, key, _now_us())), "activate"
        )

    async def failures(self, key: ProjectionKey, *, limit: int = 100) -> list[Failure]:
        """Return the recorded failures of a version in position order."""
        found: list[Failure] = await self._run(lambda c: q.failures(c, key, limit), "failures")
        return found

    async def acquire_lease(self, key: ProjectionKey, owner: str, ttl: float) -> bool:
        """Take or renew the lease for ``ttl`` seconds; False when another owner holds it."""
        now = _now_us()
        until = now + int(ttl * 1_000_000)
        got: bool = await self._run(lambda c: q.acquire(c, key, owner, until, now), "lease")
        return got

    async def release_lease(self, key: ProjectionKey, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        await self._run(lambda c: q.release(c, key, owner), "release lease")

    # -- read model ---------------------------------------------------------------------------

    async def prepare(self, projection: Projection[Any]) -> None:
        """Register the version and run its ``setup`` in one transaction."""
        if projection.has_async_handlers():
            raise ConfigurationError(
                f"{projection!r}: SQLite handlers run on the connection's thread; "
                "make setup and handlers plain functions (not async def)"
            )
        await self._run(partial(_prepare, projection=projection), "prepare projection")

    async def apply(self, projection: Projection[Any], batch: Batch) -> None:
        """Apply a batch and move the checkpoint in one transaction, fenced (see module)."""
        work = partial(_apply, projection=projection, batch=batch, hook=self.before_commit)
        await self._run(work, "apply batch")

    async def drop(self, key: ProjectionKey) -> None:
        """Drop a version's tables and entry (never the active version's)."""
        await self._run(lambda c: _in_transaction(c, lambda: q.drop(c, key)), "drop")


def _in_transaction(conn: sqlite3.Connection, work: Callable[[], Any]) -> Any:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _prepare(conn: sqlite3.Connection, *, projection: Projection[Any]) -> None:
    def work() -> None:
        q.register(conn, projection.key, _now_us())
        q.set_tables(conn, projection.key, projection.tables)
        projection.setup(SQLiteTx(conn, projection.key))
        if q.known(conn, projection.key).active:
            q.activate(conn, projection.key, _now_us())  # (re)create the views

    _in_transaction(conn, work)


def _apply(
    conn: sqlite3.Connection,
    *,
    projection: Projection[Any],
    batch: Batch,
    hook: Callable[[], None] | None,
) -> None:
    def work() -> None:
        now = _now_us()
        q.fence(conn, projection.key, batch, now)
        _run_handlers(conn, projection, batch.records)
        if batch.failure is not None:
            q.record_failure(conn, projection.key, batch.failure, now)
        if hook is not None:
            hook()

    _in_transaction(conn, work)


def _run_handlers(
    conn: sqlite3.Connection, projection: Projection[Any], records: Sequence[RecordedEvent]
) -> None:
    dispatch = projection.dispatch()
    tx = SQLiteTx(conn, projection.key)
    for index, record in enumerate(records):
        tx.record = record
        try:
            dispatch[record.event.type](record, tx)
            if not conn.in_transaction:
                raise ProjectionError("the handler ended the batch's transaction", projection="")
        except Exception as exc:
            if _is_transient(exc):
                raise
            raise HandlerError(projection.name, index, record, exc) from exc


def _is_transient(exc: Exception) -> bool:
    """A busy or locked database is the backend's trouble, not the event's: retry, never skip."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)
