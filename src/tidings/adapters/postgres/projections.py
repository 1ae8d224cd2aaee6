"""Read models in PostgreSQL: projection tables, checkpoints and leases in one schema.

A batch is one transaction: first the fenced checkpoint update (it matches only if this runner
holds the lease and the stored checkpoint is the batch's start; otherwise nothing is written),
then the handlers' writes, which `PostgresTx` queues and sends in bulk (runs of one statement
as ``executemany`` in pipeline mode, rows for one table as one ``COPY``), then COMMIT. A batch
of hundreds of events thus costs a few round trips, and a crash or a lost lease leaves neither
rows nor checkpoint.

Because writes are queued, an SQL error surfaces when the batch is sent, not in the handler
that queued it; the batch is then rolled back and replayed statement by statement to name the
event that failed (for the failure policy).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, LiteralString

import psycopg
from psycopg import sql

from tidings.adapters.postgres import checkpoints as q
from tidings.adapters.postgres.readmodels import Conn, PostgresTx
from tidings.adapters.postgres.snapshots import PostgresTables
from tidings.adapters.postgres.sql import lock_key
from tidings.errors import CheckpointConflict
from tidings.eventstore.ports import RecordedEvent
from tidings.projections.errors import HandlerError, LeaseLost, ProjectionError
from tidings.projections.ports import (
    Batch,
    Failure,
    ProjectionKey,
    ProjectionState,
    ReadModel,
    Status,
)
from tidings.projections.projector import Projection

__all__ = ["PostgresReadModel", "PostgresTx"]


class PostgresReadModel(PostgresTables, ReadModel):
    """Projection tables and their registry in a PostgreSQL schema.

    Args:
        url: ``postgresql://user@host:port/dbname``.
        schema: The schema of the registry and of the projections' tables; created if missing.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
    """

    table: ClassVar[str] = q.REGISTRY
    ddl: ClassVar[tuple[LiteralString, ...]] = q.DDL
    before_commit: Callable[[], Awaitable[None]] | None = None
    """Fault injection: awaited in the batch's transaction just before COMMIT."""

    def __init__(
        self, url: str, *, schema: str = "public", min_size: int = 1, max_size: int = 4
    ) -> None:
        super().__init__(url, schema=schema, min_size=min_size, max_size=max_size)
        self._q = q.Statements.render(self.schema)

    def render(self, template: LiteralString) -> bytes:
        """Return a DDL statement with the registry's tables named in this schema."""
        names = {
            "table": sql.Identifier(self.schema, q.REGISTRY),
            "failures": sql.Identifier(self.schema, "tidings_projection_failures"),
        }
        return sql.SQL(template).format(**names).as_bytes()

    # -- registry and leases ------------------------------------------------------------------

    async def register(self, key: ProjectionKey) -> ProjectionState:
        """Create the entry of a version when missing; the first of a name becomes active."""
        async with self._connection() as conn, conn.transaction():
            await self._lock(conn, key.name)
            await conn.execute(self._q["register"], {"name": key.name, "version": key.version})
            return await self._known(conn, key)

    async def lookup(self, key: ProjectionKey) -> ProjectionState | None:
        """Return a version's entry, or None."""
        async with self._connection() as conn:
            return await self._lookup(conn, key)

    async def states(self) -> list[ProjectionState]:
        """Return every entry, by name and version."""
        async with self._connection() as conn:
            cursor = await conn.execute(self._q["states"])
            return [q.row_state(row) for row in await cursor.fetchall()]

    async def set_status(
        self, key: ProjectionKey, status: Status, *, error: str | None = None
    ) -> None:
        """Mark a version running (clearing its error) or failed with an error."""
        shown = error if status is Status.FAILED else None
        params = (status.value, shown, key.name, key.version)
        async with self._connection() as conn:
            if (await conn.execute(self._q["status"], params)).rowcount == 0:
                await self._known(conn, key)

    async def activate(self, key: ProjectionKey) -> None:
        """Make this version the active one and point the views at its tables."""
        async with self._connection() as conn, conn.transaction():
            await self._lock(conn, key.name)
            for table in await self._tables(conn, key):
                for statement in self._q.view_ddl(table, key.version):
                    await conn.execute(statement)
            await conn.execute(self._q["activate"], (key.version, key.name))

    async def failures(self, key: ProjectionKey, *, limit: int = 100) -> list[Failure]:
        """Return the recorded failures of a version in position order."""
        async with self._connection() as conn:
            cursor = await conn.execute(self._q["failures"], (key.name, key.version, limit))
            return [Failure(*row) for row in await cursor.fetchall()]

    async def acquire_lease(self, key: ProjectionKey, owner: str, ttl: float) -> bool:
        """Take or renew the lease for ``ttl`` seconds (database clock)."""
        params = {
            "owner": owner,
            "ttl_us": int(ttl * 1e6),
            "name": key.name,
            "version": key.version,
        }
        async with self._connection() as conn:
            if (await conn.execute(self._q["acquire"], params)).rowcount == 1:
                return True
            await self._known(conn, key)
            return False

    async def release_lease(self, key: ProjectionKey, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        async with self._connection() as conn:
            await conn.execute(self._q["release"], (key.name, key.version, owner))

    # -- read model ---------------------------------------------------------------------------

    async def prepare(self, projection: Projection[Any]) -> None:
        """Register the version and run its ``setup`` in one transaction."""
        key = projection.key
        await self.register(key)
        async with self._connection() as conn, conn.transaction():
            await self._lock(conn, key.name)
            await conn.execute(self._q["set_tables"], (list(projection.tables), *_names(key)))
            tx = PostgresTx(conn, key, self.schema)
            await _maybe_await(projection.setup(tx))
            await tx.flush()
            if (await self._known(conn, key)).active:
                for table in projection.tables:
                    for statement in self._q.view_ddl(table, key.version):
                        await conn.execute(statement)

    async def apply(self, projection: Projection[Any], batch: Batch) -> None:
        """Apply a batch and move the checkpoint in one transaction, fenced (see module)."""
        try:
            await self._apply(projection, batch, careful=False)
        except _SentWithBatch:
            await self._apply(projection, batch, careful=True)  # to name the failing event

    async def drop(self, key: ProjectionKey) -> None:
        """Drop a version's tables and entry (never the active version's)."""
        async with self._connection() as conn, conn.transaction():
            await self._lock(conn, key.name)
            if (await self._known(conn, key)).active:
                raise ProjectionError(f"{key} is active", projection=key.name)
            for table in await self._tables(conn, key):
                await conn.execute(self._q.drop_table(table, key.version))
            for statement in ("delete_failures", "delete"):
                await conn.execute(self._q[statement], _names(key))

    # -- helpers ------------------------------------------------------------------------------

    async def _apply(self, projection: Projection[Any], batch: Batch, *, careful: bool) -> None:
        key = projection.key
        async with self._connection() as conn, conn.transaction():
            params = (batch.up_to, batch.last_recorded_us, *_names(key), batch.owner, batch.after)
            if (await conn.execute(self._q["fence"], params)).rowcount != 1:
                raise await self._fence_error(conn, key, batch)
            tx = PostgresTx(conn, key, self.schema)
            await _run_handlers(projection, batch.records, tx, careful=careful)
            if batch.failure is not None:
                await conn.execute(self._q["failure"], _failure_row(key, batch.failure))
            if self.before_commit is not None:
                await self.before_commit()

    async def _fence_error(self, conn: Conn, key: ProjectionKey, batch: Batch) -> Exception:
        state = await self._known(conn, key)
        if state.lease_owner != batch.owner:
            return LeaseLost(key.name, batch.owner, state.lease_owner)
        return CheckpointConflict(str(key), state.position, batch.up_to)

    async def _lock(self, conn: Conn, name: str) -> None:
        await conn.execute(self._q["lock"], (lock_key(f"projection:{name}", self.schema),))

    async def _lookup(self, conn: Conn, key: ProjectionKey) -> ProjectionState | None:
        row = await (await conn.execute(self._q["state"], _names(key))).fetchone()
        return None if row is None else q.row_state(row)

    async def _known(self, conn: Conn, key: ProjectionKey) -> ProjectionState:
        state = await self._lookup(conn, key)
        if state is None:
            raise ProjectionError(f"{key} is not registered", projection=key.name)
        return state

    async def _tables(self, conn: Conn, key: ProjectionKey) -> list[str]:
        await self._known(conn, key)
        row = await (await conn.execute(self._q["tables"], _names(key))).fetchone()
        return list(row[0]) if row else []


class _SentWithBatch(Exception):
    """An SQL error surfaced when the queued statements were sent: replay them one by one."""


async def _run_handlers(
    projection: Projection[Any], records: Sequence[RecordedEvent], tx: PostgresTx, *, careful: bool
) -> None:
    dispatch = projection.dispatch()
    for index, record in enumerate(records):
        tx.record = record
        try:
            result = dispatch[record.event.type](record, tx)
            if result is not None and inspect.isawaitable(result):
                await result
            if careful:
                await tx.flush()
        except Exception as exc:
            error = _classified(exc, projection, index, record, careful=careful)
            if error is exc:
                raise
            raise error from exc
    try:
        await tx.flush()
    except psycopg.Error as exc:
        if _is_transient(exc) or careful:
            raise
        raise _SentWithBatch from exc


def _classified(
    exc: Exception, projection: Projection[Any], index: int, record: RecordedEvent, *, careful: bool
) -> Exception:
    """Return what a handler's exception means: retry, replay carefully, or the event failed."""
    if isinstance(exc, psycopg.Error) and _is_transient(exc):
        return exc
    if isinstance(exc, psycopg.Error) and not careful:
        return _SentWithBatch()  # it may come from an earlier event's queued statement
    return HandlerError(projection.name, index, record, exc)


def _is_transient(exc: psycopg.Error) -> bool:
    """Connection trouble, deadlocks and serialization failures: retry, never skip."""
    return isinstance(exc, psycopg.OperationalError)


def _names(key: ProjectionKey) -> tuple[str, int]:
    return key.name, key.version


def _failure_row(key: ProjectionKey, failure: Failure) -> tuple[object, ...]:
    f = failure
    now = time.time_ns() // 1000
    return (key.name, key.version, f.position, f.event_id, f.event_type, f.error, now)


async def _maybe_await(value: object) -> object:
    return await value if inspect.isawaitable(value) else value
