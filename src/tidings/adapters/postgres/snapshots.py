"""Snapshots in PostgreSQL (table ``tidings_snapshots`` in the store's schema).

`PostgresTables` is the little base both domain adapters here share (this one and
`tidings.adapters.postgres.keys`): a connection pool on one schema, whose tables are created on
open under an advisory lock, so that several processes may start at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Final, LiteralString

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from tidings.adapters.postgres import sql as q
from tidings.adapters.postgres.connection import conninfo_from_url, open_pool, translate_errors
from tidings.domain.snapshots import Snapshot, SnapshotStore
from tidings.lifecycle import Resource

__all__ = ["PostgresSnapshotStore", "PostgresTables"]

Conn = AsyncConnection[TupleRow]

_SCHEMA_EXISTS: Final = b"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)"
_TABLE_EXISTS: Final = b"SELECT to_regclass(%s) IS NOT NULL"
_LOCK: Final = b"SELECT pg_advisory_xact_lock(%s)"


class PostgresTables(Resource):
    """A pool of connections to one schema, holding one table this adapter creates on open.

    Subclasses set ``table`` and ``ddl`` (statements with a ``{table}`` placeholder) and use
    `_connection`, inside which driver errors become tidings errors.

    Args:
        url: ``postgresql://user@host:port/dbname``.
        schema: The schema of the table; created when missing.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
    """

    table: ClassVar[str]
    ddl: ClassVar[tuple[LiteralString, ...]]
    connect_timeout: float = 10.0

    def __init__(
        self, url: str, *, schema: str = "public", min_size: int = 1, max_size: int = 4
    ) -> None:
        self.url = url
        self.schema = q.check_schema(schema)
        self._conninfo = conninfo_from_url(url)
        self._sizes = (min_size, max_size)
        self._pool: AsyncConnectionPool[Conn] | None = None

    def render(self, template: LiteralString) -> bytes:
        """Return a statement with ``{table}`` replaced by this adapter's qualified table."""
        name = sql.Identifier(self.schema, self.table)
        return sql.SQL(template).format(table=name).as_bytes()

    async def _open(self) -> None:
        pool = await open_pool(
            self._conninfo,
            sizes=self._sizes,
            name=f"tidings-{self.table}-{self.schema}",
            timeout=self.connect_timeout,
            setup=self._create,
        )
        self._pool = pool

    async def _create(self, conn: Conn) -> None:
        if await _scalar(conn, _TABLE_EXISTS, (f'"{self.schema}".{self.table}',)):
            return
        async with conn.transaction():
            await conn.execute(_LOCK, (q.lock_key(self.table, self.schema),))
            if not await _scalar(conn, _SCHEMA_EXISTS, (self.schema,)):
                await conn.execute(q.create_schema(self.schema))
            for statement in self.ddl:
                await conn.execute(self.render(statement))

    async def _close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        await self._ensure_open()
        assert self._pool is not None
        with translate_errors():
            async with self._pool.connection() as conn:
                yield conn


async def _scalar(conn: Conn, query: bytes, params: Sequence[object]) -> object:
    row = await (await conn.execute(query, params)).fetchone()
    return None if row is None else row[0]


class PostgresSnapshotStore(PostgresTables, SnapshotStore):
    """A snapshot store in PostgreSQL, usually in the event store's schema.

    Args:
        url: ``postgresql://user@host:port/dbname``.
        schema: The schema of ``tidings_snapshots``; created when missing.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
    """

    table = "tidings_snapshots"
    ddl = (
        """CREATE TABLE IF NOT EXISTS {table} (
            stream_id TEXT COLLATE "C" NOT NULL,
            version BIGINT NOT NULL,
            schema_version INTEGER NOT NULL,
            state BYTEA NOT NULL,
            recorded_at_us BIGINT NOT NULL,
            PRIMARY KEY (stream_id, version))""",
    )

    def __init__(
        self, url: str, *, schema: str = "public", min_size: int = 1, max_size: int = 4
    ) -> None:
        super().__init__(url, schema=schema, min_size=min_size, max_size=max_size)
        self._save = self.render(
            """INSERT INTO {table} (stream_id, version, schema_version, state, recorded_at_us)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (stream_id, version) DO UPDATE SET
                schema_version = EXCLUDED.schema_version,
                state = EXCLUDED.state,
                recorded_at_us = EXCLUDED.recorded_at_us"""
        )
        self._latest = self.render(
            """SELECT stream_id, version, schema_version, state, recorded_at_us FROM {table}
            WHERE stream_id = %s AND version <= %s ORDER BY version DESC LIMIT 1"""
        )
        self._delete = self.render("DELETE FROM {table} WHERE stream_id = %s")

    async def save(self, snapshot: Snapshot) -> None:
        """Store a snapshot, replacing one of the same stream and version."""
        row = (
            snapshot.stream_id,
            snapshot.version,
            snapshot.schema_version,
            snapshot.state,
            snapshot.recorded_at_us,
        )
        async with self._connection() as conn:
            await conn.execute(self._save, row)

    async def latest(self, stream_id: str, *, max_version: int | None = None) -> Snapshot | None:
        """Return the stream's newest snapshot at or below ``max_version`` (None: any)."""
        bound = 2**62 if max_version is None else max_version
        async with self._connection() as conn:
            cursor = await conn.execute(self._latest, (stream_id, bound))
            row = await cursor.fetchone()
        return None if row is None else Snapshot(row[0], row[1], row[2], bytes(row[3]), row[4])

    async def delete(self, stream_id: str) -> None:
        """Remove every snapshot of a stream."""
        async with self._connection() as conn:
            await conn.execute(self._delete, (stream_id,))
