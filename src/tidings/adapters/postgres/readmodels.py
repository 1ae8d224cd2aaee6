"""The transaction handle of PostgreSQL read models: queued writes, sent in bulk.

Handlers write through `PostgresTx` without waiting for the server: `PostgresTx.execute` and
`PostgresTx.copy` queue, and `PostgresTx.flush` sends the queue in order, consecutive writes
of one statement as one ``executemany`` (pipelined) and consecutive rows for one table as one
``COPY``. That is what lets a batch of hundreds of events cost a few round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from tidings.eventstore.ports import RecordedEvent
from tidings.projections.ports import ProjectionKey

__all__ = ["Conn", "PostgresTx"]

Conn = AsyncConnection[TupleRow]


class _Copy:
    """The COPY statement of one table's columns: a marker compared by identity."""

    __slots__ = ("statement",)

    def __init__(self, statement: bytes) -> None:
        self.statement = statement


Target = str | bytes | _Copy


class _Run:
    """Consecutive writes of one statement (or into one COPY target), sent together."""

    __slots__ = ("rows", "target")

    def __init__(self, target: Target, row: Sequence[object] | None) -> None:
        self.target = target
        self.rows = [row]


class PostgresTx:
    """A handler's handle on the open read-model transaction.

    `execute` and `copy` queue writes, sent before the batch commits: consecutive executes of
    one statement as one ``executemany``, consecutive rows copied into one table as one
    ``COPY``, the rest pipelined. `fetch` sends what is queued, then runs a query and returns
    its rows, so reads see the batch's earlier writes.

    Attributes:
        key: The projection version written to.
        record: The event being applied.
    """

    def __init__(self, connection: Conn, key: ProjectionKey, schema: str) -> None:
        self.key = key
        self.record: RecordedEvent | None = None
        self._conn = connection
        self._schema = schema
        self._runs: list[_Run] = []
        self._copies: dict[tuple[str, tuple[str, ...]], _Copy] = {}

    @property
    def connection(self) -> Conn:
        """The psycopg connection in the batch's transaction; `flush` before using it."""
        return self._conn

    def table(self, name: str) -> str:
        """Return the quoted, schema-qualified name of this version's table ``name``."""
        return f'"{self._schema}"."{name}_v{self.key.version}"'

    def execute(self, statement: str | bytes, params: Sequence[object] = ()) -> None:
        """Queue one statement (``%s`` placeholders); it runs before the batch commits."""
        self._queue(statement, params or None)

    def copy(self, table: str, columns: Sequence[str], row: Sequence[object]) -> None:
        """Queue one row to insert into this version's ``table`` with COPY (the fastest path)."""
        key = (table, tuple(columns))
        marker = self._copies.get(key)
        if marker is None:
            marker = self._copies[key] = _Copy(self._copy_statement(table, columns))
        self._queue(marker, row)

    def _copy_statement(self, table: str, columns: Sequence[str]) -> bytes:
        target = sql.Identifier(self._schema, f"{table}_v{self.key.version}")
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        return sql.SQL("COPY {} ({}) FROM STDIN").format(target, names).as_bytes()

    def _queue(self, target: Target, row: Sequence[object] | None) -> None:
        runs = self._runs
        if runs and runs[-1].target == target:  # markers compare by identity
            runs[-1].rows.append(row)
        else:
            runs.append(_Run(target, row))

    async def fetch(
        self, statement: str | bytes, params: Sequence[object] = ()
    ) -> list[tuple[Any, ...]]:
        """Send the queued statements, then run a query and return its rows."""
        await self.flush()
        cursor = await self._conn.execute(statement, params or None)
        return await cursor.fetchall() if cursor.description else []

    async def flush(self) -> None:
        """Send the queued writes in order: COPY runs alone, other runs pipelined."""
        runs, self._runs = self._runs, []
        runs.reverse()
        while runs:
            if isinstance(runs[-1].target, _Copy):
                await self._copy(runs.pop())
                continue
            async with self._conn.pipeline():
                while runs and not isinstance(runs[-1].target, _Copy):
                    await self._send(runs.pop())

    async def _copy(self, run: _Run) -> None:
        assert isinstance(run.target, _Copy)
        async with self._conn.cursor() as cursor, cursor.copy(run.target.statement) as copy:
            for row in run.rows:
                await copy.write_row(row or ())

    async def _send(self, run: _Run) -> None:
        statement = run.target
        assert not isinstance(statement, _Copy)
        if len(run.rows) == 1 or run.rows[0] is None:
            for params in run.rows:
                await self._conn.execute(statement, params)
            return
        async with self._conn.cursor() as cursor:
            await cursor.executemany(statement, [p for p in run.rows if p is not None])
