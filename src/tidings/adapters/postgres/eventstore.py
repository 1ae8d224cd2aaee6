"""The PostgreSQL event store: dense, stable positions without serialising the writers.

How an append works (a *post-commit sequencer*):

1. The append transaction (READ COMMITTED) locks the rows of its streams in
   ``tidings_streams`` (creating missing ones first, in stream id order, so two transactions
   never wait on each other in a cycle), checks the expected versions, and inserts its events
   into ``tidings_events`` with ``position`` and ``log_hash`` NULL. It commits. Writers to
   different streams never wait for each other here.
2. The sequencer then runs in its own short transaction: it takes a transaction-scoped
   advisory lock (one per schema), reads the log head, selects the committed rows that have no
   position in insertion-id order, gives them positions head+1, head+2... with their log-hash
   links, moves the head, sends ``NOTIFY`` and commits. Whoever runs it positions every
   committed row, its own and other writers'. In one process, appends that commit while a run
   is in progress share the next run (`GroupRun`), so under load one run serves many appends
   instead of each queueing on the lock.

Why positions are dense and stable:

- Readers only ever see rows that have a position, and positions are only assigned by
  sequencer runs. Runs are serialised by the advisory lock; each assigns one contiguous block
  just above the previous head and commits it, together with the new head, atomically. So a
  reader that sees position p sees every position from 1 to p, and nothing can later be
  assigned at or below p.
- The lock is taken in a statement of its own. Under READ COMMITTED every later statement
  takes a new snapshot, which includes every transaction that committed before the lock was
  granted: the previous run (PostgreSQL releases locks only after a commit is visible) and
  every append that committed before. Rows still being inserted are invisible and simply wait
  for a later run; nothing is skipped on a timer and no hole is ever left.
- Rows of one stream are inserted by transactions that serialise on the stream's row, so a
  later version always has a larger id and commits later; sequencing by id keeps version
  order, and a stream's positioned rows are always a prefix of its versions.
- A writer that dies after committing its rows and before sequencing loses nothing: the next
  run (any append, or a subscriber's poll, which checks for unpositioned rows) positions them.
- A long transaction elsewhere, even one that inserted rows and has not committed, delays no
  one else's positions: its rows get positions when it commits, after the ones already read.

Finding the unpositioned rows stays cheap between vacuums: each row records the transaction
that inserted it (``txid``), and a run that positions every row it saw stores the oldest
transaction still running in its snapshot (``scan_from``). A row without a position must come
from a transaction that was running then or began later, so the next run's index scan starts
there, past the stale entries of rows positioned since the last vacuum.

A `BackendError` from `append` means the outcome is unknown (as for any commit whose answer
is lost); if the rows committed, they are positioned by the next sequencer run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, TypeVar, cast

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from tidings.adapters.postgres import sql as q
from tidings.adapters.postgres.connection import (
    GroupRun,
    Listener,
    conninfo_from_url,
    open_pool,
    translate_errors,
)
from tidings.adapters.postgres.group_commit import GroupCommit, Request
from tidings.errors import (
    BackendUnavailableError,
    CheckpointConflict,
    ConcurrencyConflict,
    StreamDeletedError,
)
from tidings.eventstore.base import StoreBase, check_expected
from tidings.eventstore.ports import (
    AppendResult,
    Checkpoint,
    StreamAppend,
    StreamInfo,
    StreamMetadata,
)
from tidings.eventstore.records import GENESIS, ReadRow, StoredRecord, chain, encode_event

__all__ = ["PostgresEventStore"]

Conn = AsyncConnection[TupleRow]
Params = Sequence[object] | Mapping[str, object]

T = TypeVar("T")

_PAGE: Final = 10_000


@dataclass(frozen=True, slots=True)
class _Written:
    """One stream's part of a committed append: its new head and its last row's id."""

    stream_id: str
    version: int
    last_hash: bytes
    last_id: int = 0


class PostgresEventStore(StoreBase):
    """An event store in PostgreSQL 13 or later (``postgresql://``), safe for many processes.

    Args:
        url: ``postgresql://user@host:port/dbname``; ``postgres://`` and
            ``postgresql+psycopg://`` are accepted too.
        schema: The schema that holds the tables; created (with the tables) when missing.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
        max_event_bytes: Largest encoded event accepted (default 1 MiB).
    """

    connect_timeout: float = 10.0
    """Seconds `open` waits for the first connection before raising."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        max_event_bytes: int | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self.schema = q.check_schema(schema)
        if max_event_bytes is not None:
            self.max_event_bytes = max_event_bytes
        self._conninfo = conninfo_from_url(url)
        self._sizes = (min_size, max_size)
        self._sql = q.Statements.render(schema)
        self._sequencer_key = q.lock_key("sequencer", schema)
        self._channel = q.channel(schema)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._listener = Listener(self._conninfo, self._channel, self._wakeup.notify)
        self._sequencer = GroupRun(self._sequence)
        self._group: GroupCommit[list[AppendResult]] = GroupCommit(self._commit_group)
        self.before_commit: Callable[[], Awaitable[None]] | None = None
        """Fault injection: awaited in the append transaction just before COMMIT; may raise."""

    # -- lifecycle ----------------------------------------------------------------------------

    async def _open(self) -> None:
        pool = await open_pool(
            self._conninfo,
            sizes=self._sizes,
            name=f"tidings-{self.schema}",
            timeout=self.connect_timeout,
            setup=self._create_tables,
            configure=self._configure,
        )
        self._pool = pool

    async def _configure(self, conn: Conn) -> None:
        await conn.execute(self._sql.configure)

    async def _create_tables(self, conn: Conn) -> None:
        last_table = f'"{self.schema}".tidings_checkpoints'
        if await self._scalar(conn, self._sql.table_exists, (last_table,)):
            return  # the tables are created in one transaction: the last one means all
        async with conn.transaction():
            await conn.execute(self._sql.advisory_xact_lock, (q.lock_key("ddl", self.schema),))
            if not await self._scalar(conn, self._sql.schema_exists, (self.schema,)):
                await conn.execute(q.create_schema(self.schema))
            for statement in q.ddl(self.schema):
                await conn.execute(statement)
            await conn.execute(self._sql.init_log_head, (GENESIS,))
            await conn.execute(self._sql.analyze_log_head)

    async def _close(self) -> None:
        await self._group.drain()
        await self._sequencer.aclose()
        await self._listener.aclose()
        if self._pool is not None:
            await self._pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        self._check_not_closed()
        assert self._pool is not None
        try:
            with translate_errors():
                async with self._pool.connection() as conn:
                    yield conn
        except BackendUnavailableError as exc:
            if _lost_connection(exc):  # after a restart: drop every dead one, not one per call
                await self._pool.check()
            raise

    async def _retrying(self, operation: Callable[[Conn], Awaitable[T]]) -> T:
        """Run an idempotent operation, once more on a fresh connection if its was dead."""
        try:
            async with self._connection() as conn:
                return await operation(conn)
        except BackendUnavailableError as exc:
            if not _lost_connection(exc):
                raise
        async with self._connection() as conn:
            return await operation(conn)

    # -- append -------------------------------------------------------------------------------

    async def _append_many(
        self, appends: Sequence[StreamAppend], checkpoint: Checkpoint | None
    ) -> list[AppendResult]:
        if checkpoint is None:  # concurrent plain appends share a transaction (group commit)
            encoded = self._encode(appends)
            streams = frozenset(a.stream_id for a in appends)
            return await self._group.submit(streams, (appends, encoded))
        async with self._connection() as conn:
            written = await self._write(conn, appends, checkpoint)
        positions = await self._position([w.last_id for w in written])
        self._wakeup.notify()
        return [AppendResult(w.stream_id, w.version, positions[w.last_id]) for w in written]

    def _encode(self, appends: Sequence[StreamAppend]) -> list[list[tuple[bytes, int]]]:
        return [[encode_event(e, limit=self.max_event_bytes) for e in a.events] for a in appends]

    async def _commit_group(
        self, group: list[Request[list[AppendResult]]]
    ) -> list[list[AppendResult] | BaseException]:
        """Commit a group of plain appends in one transaction, then position them in one run."""
        async with self._connection() as conn:
            outcomes = await self._write_group(conn, [r.payload for r in group])  # type: ignore[misc]
        ids = [w.last_id for o in outcomes if isinstance(o, list) for w in o]
        positions = await self._position(ids) if ids else {}
        self._wakeup.notify()
        return [
            o
            if isinstance(o, BaseException)
            else [AppendResult(w.stream_id, w.version, positions[w.last_id]) for w in o]
            for o in outcomes
        ]

    async def _write_group(
        self, conn: Conn, group: list[tuple[Sequence[StreamAppend], list[list[tuple[bytes, int]]]]]
    ) -> list[list[_Written] | BaseException]:
        """Stage each request against the locked stream rows; insert what passed; commit."""
        names = sorted({a.stream_id for appends, _ in group for a in appends})
        s = self._sql
        async with conn.pipeline() as pipeline, conn.transaction():
            await conn.execute(s.ensure_streams, (GENESIS, names))
            locked = await conn.execute(s.lock_streams, (names,))
            heads = {row[0]: row[1:] for row in await locked.fetchall()}
            batch = q.InsertBatch(recorded_at_us=time.time_ns() // 1000)
            outcomes = [_stage_request(batch, appends, enc, heads) for appends, enc in group]
            written = [w for o in outcomes if isinstance(o, list) for w in o]
            if not written:
                return outcomes
            inserted = await conn.execute(s.insert_events, (*batch.params(), *_new_heads(written)))
            if self.before_commit is not None:
                await pipeline.sync()
                await self.before_commit()
        last_ids: dict[str, int] = dict(await inserted.fetchall())
        return [
            o
            if isinstance(o, BaseException)
            else [_Written(w.stream_id, w.version, w.last_hash, last_ids[w.stream_id]) for w in o]
            for o in outcomes
        ]

    async def _write(
        self, conn: Conn, appends: Sequence[StreamAppend], checkpoint: Checkpoint | None
    ) -> list[_Written]:
        """Commit the rows of an append, unpositioned; return each stream's part in order."""
        if checkpoint is not None and checkpoint.position <= 0:
            raise CheckpointConflict(checkpoint.name, 0, checkpoint.position)
        encoded = self._encode(appends)
        names = sorted(a.stream_id for a in appends)  # code point order, as COLLATE "C"
        s = self._sql
        async with conn.pipeline() as pipeline, conn.transaction():
            await conn.execute(s.ensure_streams, (GENESIS, names))
            locked = await conn.execute(s.lock_streams, (names,))
            advanced = None
            if checkpoint is not None:
                params = (checkpoint.name, checkpoint.position)
                advanced = await conn.execute(s.advance_checkpoint, params)
            heads = {row[0]: row[1:] for row in await locked.fetchall()}
            # Timestamped after the locks, so a stream's recorded times never go backwards.
            batch = q.InsertBatch(recorded_at_us=time.time_ns() // 1000)
            written = [
                _stage(batch, a, e, heads[a.stream_id])
                for a, e in zip(appends, encoded, strict=True)
            ]
            if checkpoint and advanced and await advanced.fetchone() is None:
                raise await self._checkpoint_conflict(conn, checkpoint)
            inserted = await conn.execute(s.insert_events, (*batch.params(), *_new_heads(written)))
            if self.before_commit is not None:
                await pipeline.sync()  # the rows are in the server's open transaction
                await self.before_commit()
        last_ids: dict[str, int] = dict(await inserted.fetchall())  # sent with the COMMIT
        return [
            _Written(w.stream_id, w.version, w.last_hash, last_ids[w.stream_id]) for w in written
        ]

    async def _checkpoint_conflict(self, conn: Conn, checkpoint: Checkpoint) -> CheckpointConflict:
        stored = await self._scalar(conn, self._sql.read_checkpoint, (checkpoint.name,))
        return CheckpointConflict(checkpoint.name, _int(stored), checkpoint.position)

    # -- sequencer ----------------------------------------------------------------------------

    async def _position(self, ids: Sequence[int]) -> dict[int, int]:
        """Return the positions of committed rows, running the sequencer for them."""
        positioned = await self._sequencer.run()  # a run that started after their commit
        found = {i: positioned[i] for i in ids if i in positioned}
        if len(found) < len(ids):  # positioned by another process's run
            missing = list(set(ids) - found.keys())
            found.update(await self._fetch(self._sql.positions_of, (missing,)))
        return found

    async def _sequence(self) -> dict[int, int]:
        """Position every committed row that has none, in id order; return {id: position}."""
        return await self._retrying(self._sequence_on)

    async def _sequence_on(self, conn: Conn) -> dict[int, int]:
        async with conn.pipeline(), conn.transaction():
            await conn.execute(self._sql.advisory_xact_lock, (self._sequencer_key,))
            # A statement of its own: its snapshot includes every commit before the lock.
            cur = await conn.execute(self._sql.unpositioned, binary=True)
            rows = await cur.fetchall()
            head, log_hash, oldest_running, first_id, _ = rows[0]
            if first_id is None:
                return {}
            ids, hashes = _link(log_hash, rows)
            params = {
                "head": head,
                "ids": ids,
                "hashes": hashes,
                "new_head": head + len(ids),
                "new_hash": hashes[-1],
                "scan_from": oldest_running,  # every row of older transactions has a position
                "channel": self._channel,
            }
            await conn.execute(self._sql.set_positions, params)
        return dict(zip(ids, range(head + 1, head + len(ids) + 1), strict=True))

    async def _heal(self) -> None:
        """Position rows that a writer committed but did not sequence (it may have died)."""
        if await self._fetch(self._sql.any_unpositioned) == [(True,)]:
            await self._sequencer.run()

    async def _wait_for_change(self, token: asyncio.Event) -> None:
        self._check_not_closed()  # never restart the listener after aclose()
        self._listener.start()
        await super()._wait_for_change(token)
        if not token.is_set():  # a poll interval without a wake-up: look for stranded rows
            await self._heal()

    # -- reads --------------------------------------------------------------------------------

    async def _head(self) -> int:
        return await self._value(self._sql.head)

    async def _select_log(
        self, after: int, types: Sequence[str] | None, limit: int
    ) -> list[ReadRow]:
        if types is None:
            return await self._read_rows(self._sql.select_log, (after, limit))
        return await self._read_rows(self._sql.select_log_types, (after, list(types), limit))

    async def _select_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        max_version: int | None,
        max_recorded_us: int | None,
        min_version: int,
    ) -> list[ReadRow]:
        bounds = (from_version, max_version, max_recorded_us, limit)
        query = q.select_stream(
            self.schema,
            backwards=backwards,
            from_version=from_version is not None,
            max_version=max_version is not None,
            max_recorded=max_recorded_us is not None,
            limit=limit is not None,
        )
        params = [stream_id, min_version, *(b for b in bounds if b is not None)]
        return await self._read_rows(query, params)

    async def _iter_stored(self, up_to: int) -> AsyncIterator[StoredRecord]:
        after = 0
        while after < up_to:
            page = await self._records(self._sql.iter_stored, (after, up_to, _PAGE))
            if not page:
                break
            for record in page:
                yield record
            after = page[-1].position
        for record in await self._records(self._sql.beyond_head, (_PAGE,)):
            yield record  # forged rows past the head; the verifier reports the first

    async def _stream_state(self, stream_id: str) -> tuple[int, StreamMetadata] | None:
        rows = await self._fetch(self._sql.stream_state, (stream_id,))
        if not rows:
            return None
        version, max_count, max_age_us, deleted = rows[0]
        return version, _metadata(max_count, max_age_us, deleted)

    async def _retention_rules(self) -> dict[str, tuple[int, StreamMetadata]]:
        rows = await self._fetch(self._sql.retention_rules)
        return {sid: (version, _metadata(*rest)) for sid, version, *rest in rows}

    async def _list_streams(self, after: str | None, limit: int) -> list[StreamInfo]:
        if after is None:
            rows = await self._fetch(self._sql.list_streams, (limit,))
        else:
            rows = await self._fetch(self._sql.list_streams_after, (after, limit))
        return [StreamInfo(sid, version, _metadata(*rest)) for sid, version, *rest in rows]

    async def _set_metadata(self, stream_id: str, metadata: StreamMetadata) -> None:
        age = None if metadata.max_age is None else metadata.max_age // timedelta(microseconds=1)
        params = (stream_id, GENESIS, metadata.max_count, age, metadata.deleted)
        await self._fetch(self._sql.set_metadata, params)

    async def _heads(self) -> tuple[dict[str, tuple[int, bytes]], int]:
        return await self._retrying(self._read_heads)

    async def _read_heads(self, conn: Conn) -> tuple[dict[str, tuple[int, bytes]], int]:
        async with conn.transaction():
            await conn.execute(self._sql.repeatable_read)  # one snapshot for head and streams
            head = await self._scalar(conn, self._sql.head)
            cur = await conn.execute(self._sql.stream_heads)
            rows = await cur.fetchall()
        return {row[0]: _log_head_of_stream(*row[1:]) for row in rows}, _int(head)

    async def checkpoint(self, name: str) -> int:
        """Return a consumer's stored checkpoint (0 when it has none)."""
        await self._ensure_open()
        return await self._value(self._sql.read_checkpoint, (name,))

    # -- small helpers ------------------------------------------------------------------------

    async def _fetch(
        self, query: bytes, params: Params = (), *, binary: bool = False
    ) -> list[TupleRow]:
        """Run one idempotent statement and return its rows (none for a statement without)."""

        async def fetch(conn: Conn) -> list[TupleRow]:
            cur = await conn.execute(query, params, binary=binary)
            return await cur.fetchall() if cur.description else []

        return await self._retrying(fetch)

    async def _value(self, query: bytes, params: Params = ()) -> int:
        rows = await self._fetch(query, params)
        return _int(rows[0][0] if rows else None)

    async def _records(self, query: bytes, params: Params) -> list[StoredRecord]:
        return [StoredRecord(*row) for row in await self._fetch(query, params, binary=True)]

    async def _read_rows(self, query: bytes, params: Params) -> list[ReadRow]:
        return cast(list[ReadRow], await self._fetch(query, params, binary=True))

    @staticmethod
    async def _scalar(conn: Conn, query: bytes, params: Params = ()) -> object:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
        return None if row is None else row[0]


def _stage(
    batch: q.InsertBatch, append: StreamAppend, encoded: Sequence[tuple[bytes, int]], head: TupleRow
) -> _Written:
    """Check one stream's append against its locked row and add its rows to the batch."""
    version, last_hash, deleted = head
    if deleted:
        raise StreamDeletedError(append.stream_id)
    check_expected(append.stream_id, append.expected_version, version)
    version, last_hash = batch.add(append.stream_id, (version, last_hash), append.events, encoded)
    return _Written(append.stream_id, version, last_hash)


def _stage_request(
    batch: q.InsertBatch,
    appends: Sequence[StreamAppend],
    encoded: Sequence[Sequence[tuple[bytes, int]]],
    heads: Mapping[str, TupleRow],
) -> list[_Written] | BaseException:
    """Check every stream of one request first, so a failing request adds no rows at all."""
    try:
        for append in appends:
            version, _, deleted = heads[append.stream_id]
            if deleted:
                raise StreamDeletedError(append.stream_id)
            check_expected(append.stream_id, append.expected_version, version)
    except (StreamDeletedError, ConcurrencyConflict) as exc:
        return exc
    return [_stage(batch, a, e, heads[a.stream_id]) for a, e in zip(appends, encoded, strict=True)]


def _new_heads(written: Iterable[_Written]) -> Params:
    """Return the streams' new heads as the column arrays ``insert_events`` ends with."""
    rows = list(written)
    return ([w.stream_id for w in rows], [w.version for w in rows], [w.last_hash for w in rows])


def _link(log_hash: bytes, rows: Sequence[TupleRow]) -> tuple[list[int], list[bytes]]:
    """Return the ids of ``rows`` (..., id, content hash) and their log-chain links."""
    ids: list[int] = []
    hashes: list[bytes] = []
    for *_, row_id, digest in rows:
        log_hash = chain(log_hash, digest)
        ids.append(row_id)
        hashes.append(log_hash)
    return ids, hashes


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _lost_connection(exc: BackendUnavailableError) -> bool:
    """Whether a pooled connection died (and another may work), not the pool giving up."""
    return not isinstance(exc.__cause__, PoolTimeout | PoolClosed)


def _metadata(max_count: int | None, max_age_us: int | None, deleted: bool) -> StreamMetadata:
    age = None if max_age_us is None else timedelta(microseconds=max_age_us)
    return StreamMetadata(max_count=max_count, max_age=age, deleted=deleted)


def _log_head_of_stream(
    version: int, last_hash: bytes, first_unpositioned: int | None, previous: bytes | None
) -> tuple[int, bytes]:
    """Return where a stream ends in the log: before its first row that has no position."""
    if first_unpositioned is None:
        return version, last_hash
    return first_unpositioned - 1, previous if previous is not None else GENESIS
