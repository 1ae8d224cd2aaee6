"""The outbox benchmark: relay throughput and commit-to-broker latency, next to a raw loop.

Every case moves N typical events (the envelope benchmark's, 100 aggregates) from a database
to a broker topic with one partition, 500 events per database transaction and per publish:

- ``relay/<db>-><broker>/tidings``: the outbox holds N committed events (written before the
  timed part by the outbox writer, 500 per transaction); the timed part is
  ``Relay(source, broker, batch_size=500).drain()``: fetch, decode, publish, mark relayed.
  ``<db>`` is ``sqlite`` (`SQLiteOutboxSource`, ``synchronous=FULL``), ``postgres``
  (`PostgresOutboxSource`, rows deleted once relayed) or ``wal`` (the tableless
  `PostgresWalOutboxSource`: a fresh logical slot per run, dropped afterwards).
- ``relay/<db>-><broker>/raw``: the baseline, a raw insert-then-publish loop: per 500 events,
  plain sqlite3 or psycopg (``executemany``) inserts the same precomputed rows into a table of
  the same shape in one transaction, then ``broker.publish(topic, the 500 events)``. It is
  what a naive dual write costs (and loses events on a crash); the WAL cases compare with
  the PostgreSQL loop.
- ``<broker>`` is ``sqlite`` (`SQLiteBroker`, a fresh file, ``synchronous=FULL``) or ``nats``
  (`NatsBroker` on the server at 127.0.0.1:4222, a fresh topic per run, deleted afterwards).

Latency is not a rate, so it is not a case: ``python -m benchmarks.outbox`` commits one event
per transaction at a steady 1,000 events/s (16 writer connections on PostgreSQL; one thread
on SQLite, WAL, ``synchronous`` FULL and, in one more run, NORMAL) and prints the percentiles
of the time from the application issuing COMMIT to a subscriber of the broker holding the
event, and the commit rate the application reached. Relay runs: the application is a process
of its own that only commits, the relay (``batch_size=500``, woken by NOTIFY on PostgreSQL,
by polling ``data_version`` every 10 ms on SQLite) and the subscriber run here. Raw runs: the
raw loop here, each commit followed by its publish. The two processes' stamps share a clock
(`time.perf_counter` is the system's monotonic clock).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benchmarks._envelope_fixtures import PAYLOAD, make_event
from benchmarks.api import Case, Cases, Skip, skip_unless_reachable
from tidings.events import Event
from tidings.messaging.ports import Broker
from tidings.outbox import Relay
from tidings.outbox.rows import OutboxRow, outbox_row
from tidings.outbox.schema import PostgresSQL, SQLiteSQL, pyformat

PACKAGES: Final = ("psycopg", "nats-py", "msgspec")
CASES = Cases()

SIZE: Final = 20_000
BATCH: Final = 500
AGGREGATES: Final = 100
PG_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
NATS_URL: Final = "nats://127.0.0.1:4222"
TOPIC: Final = "bench"
_COLUMNS: Final = "id, occurred_at, aggregate_type, aggregate_id, event_type, payload, flags, " + (
    "topic, partition_key, shard"
)


def _rows(size: int, topic: str) -> list[tuple[Event, OutboxRow]]:
    """Return ``size`` typical events, each with the outbox row that stores it for ``topic``."""
    events = [make_event(PAYLOAD) for _ in range(size)]
    return [
        (event, outbox_row(event, topic=topic, aggregate_id=f"order-{n % AGGREGATES}"))
        for n, event in enumerate(events)
    ]


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[start : start + BATCH] for start in range(0, len(items), BATCH)]


# -- brokers --------------------------------------------------------------------------------


@asynccontextmanager
async def _broker(kind: str, directory: Path) -> AsyncIterator[tuple[Broker, str]]:
    """Open a fresh broker and one-partition topic of ``kind``; delete a NATS topic after."""
    if kind == "sqlite":
        from tidings.adapters.sqlite.broker import SQLiteBroker

        async with SQLiteBroker(directory / "broker.db") as sqlite_broker:
            await sqlite_broker.create_topic(TOPIC, partitions=1)
            yield sqlite_broker, TOPIC
        return
    skip_unless_reachable("127.0.0.1", 4222, service="NATS")
    from tidings.adapters.nats import NatsBroker

    topic = f"bench.outbox.{uuid.uuid4().hex[:10]}"
    async with NatsBroker(NATS_URL, fsync_ack_warning=False) as nats_broker:
        await nats_broker.create_topic(topic, partitions=1)
        try:
            yield nats_broker, topic
        finally:
            await nats_broker.delete_topic(topic)


# -- databases: the outbox writer and source, and the raw table -----------------------------


class _Database:
    """A fresh database of one kind per run: its outbox writer, relay source and raw table."""

    def __init__(
        self, kind: str, directory: Path, *, schema: str | None = None, synchronous: str = "FULL"
    ) -> None:
        self.kind = kind
        self.synchronous = synchronous
        self.directory = directory
        self.schema = schema or f"bench_outbox_{uuid.uuid4().hex[:8]}"
        self.slot = f"bench_outbox_{uuid.uuid4().hex[:8]}"
        self.sqlite_path = directory / "shop.db"
        self.pg: Any = None

    async def __aenter__(self) -> _Database:
        if self.kind != "sqlite":
            skip_unless_reachable("127.0.0.1", 5432, service="PostgreSQL")
            import psycopg

            self.pg = await psycopg.AsyncConnection.connect(PG_URL, autocommit=True)
            await self.pg.execute(f'CREATE SCHEMA "{self.schema}"'.encode())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pg is not None:
            await self.pg.execute(f'DROP SCHEMA "{self.schema}" CASCADE'.encode())
            await self.pg.close()

    def source(self) -> Any:
        """Return the (unopened) relay source of this database."""
        if self.kind == "sqlite":
            from tidings.adapters.sqlite.outbox import SQLiteOutboxSource

            return SQLiteOutboxSource(self.sqlite_path)
        if self.kind == "postgres":
            from tidings.adapters.postgres.outbox import PostgresOutboxSource

            return PostgresOutboxSource(PG_URL, schema=self.schema)
        from tidings.adapters.postgres.outbox_wal import PostgresWalOutboxSource

        return PostgresWalOutboxSource(PG_URL, slot=self.slot)

    async def drop_source(self, source: Any) -> None:
        """Drop what a source made outside the schema (the WAL slot)."""
        if self.kind == "wal":
            await source.drop()

    def sqlite_connection(self, *, check_same_thread: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.sqlite_path, isolation_level=None, check_same_thread=check_same_thread
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    async def pg_connection(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(PG_URL)

    async def fill(self, rows: list[tuple[Event, OutboxRow]]) -> None:
        """Commit every event to the outbox with its writer, 500 per transaction."""
        chunks = _chunks(rows)
        if self.kind == "sqlite":
            from tidings.adapters.sqlite.outbox import SQLiteOutbox

            conn, outbox = self.sqlite_connection(), SQLiteOutbox()
            outbox.create_table(conn)
            for chunk in chunks:
                with conn:
                    conn.execute("BEGIN")
                    for event, row in chunk:
                        outbox.add(conn, event, topic=row.topic, aggregate_id=row.aggregate_id)
            conn.close()
            return
        writer = self._pg_writer()
        async with await self.pg_connection() as conn:
            for chunk in chunks:
                async with conn.transaction(), conn.pipeline():
                    for event, row in chunk:
                        await writer.add(
                            conn, event, topic=row.topic, aggregate_id=row.aggregate_id
                        )

    def _pg_writer(self) -> Any:
        if self.kind == "postgres":
            from tidings.adapters.postgres.outbox import PostgresOutbox

            return PostgresOutbox(schema=self.schema)
        from tidings.adapters.postgres.outbox_wal import PostgresWalOutbox

        return PostgresWalOutbox()


class _RawTable:
    """The raw loop's table: the outbox table's shape, written with a plain INSERT."""

    def __init__(self, db: _Database) -> None:
        self.db = db
        names = [name.strip() for name in _COLUMNS.split(",")]
        self.sqlite_insert = f"INSERT INTO raw_outbox ({_COLUMNS}) VALUES ({', '.join('?' * 10)})"
        qualified = f'"{db.schema}".raw_outbox'
        values = ", ".join(f"%({name})s" for name in names)
        self.pg_insert = f"INSERT INTO {qualified} ({_COLUMNS}) VALUES ({values})".encode()
        self.conn: Any = None

    async def open(self) -> None:
        if self.db.kind == "sqlite":
            self.conn = self.db.sqlite_connection()
            for statement in SQLiteSQL("raw_outbox").ddl():
                self.conn.execute(statement)
            return
        self.conn = await self.db.pg_connection()
        for statement in PostgresSQL(self.db.schema, "raw_outbox").ddl():
            if "TRIGGER" not in statement and "_shards" not in statement:  # the table, indexes
                await self.conn.execute(pyformat(statement).encode())
        await self.conn.commit()

    async def insert(self, rows: list[OutboxRow]) -> None:
        """Insert one batch of rows in one transaction."""
        if self.db.kind == "sqlite":
            params = [_sqlite_params(row) for row in rows]
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany(self.sqlite_insert, params)
            return
        async with self.conn.transaction(), self.conn.cursor() as cursor:
            await cursor.executemany(self.pg_insert, [row.params() for row in rows])

    async def close(self) -> None:
        if self.conn is not None:
            result = self.conn.close()
            if isinstance(result, Awaitable):
                await result


def _sqlite_params(row: OutboxRow) -> tuple[object, ...]:
    params = row.params()
    params["occurred_at"] = row.occurred_at.isoformat()
    return tuple(params.values())


# -- throughput cases -----------------------------------------------------------------------


class _Run:
    """One measured run's resources: a temp directory, a database and a broker."""

    def __init__(self, db_kind: str, broker_kind: str) -> None:
        self.db_kind = db_kind
        self.broker_kind = broker_kind

    async def setup(self, size: int) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tidings-bench-outbox-"))
        self.stack = AsyncExitStack()
        try:
            self.db = await self.stack.enter_async_context(_Database(self.db_kind, self.directory))
            self.broker, self.topic = await self.stack.enter_async_context(
                _broker(self.broker_kind, self.directory)
            )
            self.rows = _rows(size, self.topic)
            await self.prepare()
        except BaseException:
            await self.teardown()
            raise

    async def prepare(self) -> None:
        """Make the run's own resources (after the database and broker are open)."""

    async def teardown(self) -> None:
        try:
            await self.stack.aclose()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class RawLoop(_Run):
    """Raw insert-then-publish: insert 500 rows in one transaction, then publish them."""

    async def prepare(self) -> None:
        self.table = _RawTable(self.db)
        self.stack.push_async_callback(self.table.close)
        await self.table.open()

    async def run(self, size: int) -> None:
        for chunk in _chunks(self.rows):
            await self.table.insert([row for _, row in chunk])
            await self.broker.publish(self.topic, [event for event, _ in chunk])


class RelayDrain(_Run):
    """Relay(source, broker, batch_size=500).drain() of N committed outbox events."""

    async def prepare(self) -> None:
        self.source = self.db.source()
        await self.source.open()  # a WAL source makes its slot here, before the writes
        self.stack.push_async_callback(self.source.aclose)
        self.stack.push_async_callback(self.db.drop_source, self.source)
        await self.db.fill(self.rows)

    async def run(self, size: int) -> None:
        relayed = await Relay(self.source, self.broker, batch_size=BATCH).drain()
        if relayed != size:
            raise RuntimeError(f"relayed {relayed} of {size} events")


def _case(name: str, state: _Run, baseline: str | None = None) -> Case:
    doc = (type(state).__doc__ or "").strip().splitlines()[0]
    return Case(
        name=name,
        run=state.run,  # type: ignore[attr-defined]
        setup=state.setup,
        teardown=state.teardown,
        size=SIZE,
        unit="events/s",
        baseline=baseline,
        description=doc,
    )


def _declare() -> None:
    for broker in ("sqlite", "nats"):
        for db in ("sqlite", "postgres"):
            CASES.append(_case(f"relay/{db}->{broker}/raw", RawLoop(db, broker)))
        for db in ("sqlite", "postgres", "wal"):
            baseline = f"relay/{'postgres' if db == 'wal' else db}->{broker}/raw"
            CASES.append(_case(f"relay/{db}->{broker}/tidings", RelayDrain(db, broker), baseline))


_declare()


# -- latency at a steady rate ---------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """Commit-to-subscriber percentiles of one run, in milliseconds, and the commit rate."""

    p50: float
    p99: float
    max: float
    rate: float

    @classmethod
    def of(cls, seconds: list[float], elapsed: float) -> Latency:
        """Summarise latencies (seconds) measured over ``elapsed`` seconds."""
        ms = sorted(s * 1000 for s in seconds)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        return cls(statistics.median(ms), p99, ms[-1], len(ms) / elapsed)


Commit = Callable[[Event, OutboxRow], Awaitable[None]]
"""Writes one event in its own transaction, stamping the event just before it commits."""

PG_WRITERS: Final = 16
"""PostgreSQL writer connections (one commit at a time each) at the steady rate."""


async def _sqlite_committer(
    db: _Database, raw: bool, stamps: dict[str, float], stack: AsyncExitStack
) -> Commit:
    """One connection in its own thread, so that waiting for SQLite's lock blocks no loop."""
    from tidings.adapters.sqlite.outbox import SQLiteOutbox

    conn, outbox = db.sqlite_connection(check_same_thread=False), SQLiteOutbox()
    stack.callback(conn.close)
    pool = ThreadPoolExecutor(1, thread_name_prefix="bench-writer")
    stack.callback(pool.shutdown)
    outbox.create_table(conn)
    table = _RawTable(db)
    for statement in SQLiteSQL("raw_outbox").ddl() if raw else ():
        conn.execute(statement)

    def write(event: Event, row: OutboxRow) -> None:
        conn.execute("BEGIN IMMEDIATE")
        if raw:
            conn.execute(table.sqlite_insert, _sqlite_params(row))
        else:
            outbox.add(conn, event, topic=row.topic, aggregate_id=row.aggregate_id)
        stamps[event.id] = time.perf_counter()
        conn.execute("COMMIT")

    async def commit(event: Event, row: OutboxRow) -> None:
        await asyncio.get_running_loop().run_in_executor(pool, write, event, row)

    return commit


async def _pg_committer(
    db: _Database, raw: bool, stamps: dict[str, float], stack: AsyncExitStack
) -> Commit:
    """`PG_WRITERS` connections; each commit takes an idle one."""
    table = _RawTable(db)
    if raw:
        await table.open()
        stack.push_async_callback(table.close)
    writer = db._pg_writer()
    idle: asyncio.Queue[Any] = asyncio.Queue()
    for _ in range(PG_WRITERS):
        conn = await db.pg_connection()
        stack.push_async_callback(conn.close)
        idle.put_nowait(conn)

    async def commit(event: Event, row: OutboxRow) -> None:
        conn = await idle.get()
        try:
            if raw:
                await conn.execute(table.pg_insert, row.params())
            else:
                await writer.add(conn, event, topic=row.topic, aggregate_id=row.aggregate_id)
            stamps[event.id] = time.perf_counter()
            await conn.commit()
        finally:
            idle.put_nowait(conn)

    return commit


async def measure_latency(
    db_kind: str,
    broker_kind: str,
    *,
    raw: bool,
    rate: int = 1_000,
    seconds: float = 5.0,
    synchronous: str = "FULL",
) -> Latency:
    """Commit one event per transaction at ``rate``; return commit-to-subscriber latency.

    ``raw``: the application publishes each event itself right after its commit (the raw
    loop, in this process); otherwise the application is another process that only commits,
    and a relay in this process publishes what the outbox holds. ``synchronous`` is the
    SQLite application's setting (FULL or NORMAL; WAL either way).
    """
    directory = Path(tempfile.mkdtemp(prefix="tidings-bench-outbox-"))
    try:
        async with AsyncExitStack() as stack:
            db = _Database(db_kind, directory, synchronous=synchronous)
            await stack.enter_async_context(db)
            target = await stack.enter_async_context(_broker(broker_kind, directory))
            return await _steady(stack, db, target, raw=raw, count=int(rate * seconds), rate=rate)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _steady(
    stack: AsyncExitStack,
    db: _Database,
    target: tuple[Broker, str],
    *,
    raw: bool,
    count: int,
    rate: int,
) -> Latency:
    """Write ``count`` events at ``rate`` with a subscriber (and a relay) running."""
    broker, topic = target
    source = None if raw else db.source()
    if source is not None:
        await source.open()  # before the writes: a WAL source makes its slot here
        stack.push_async_callback(source.aclose)
        stack.push_async_callback(db.drop_source, source)
    stream: Any = broker.subscribe(topic, group="g")  # an async iterator and context manager
    subscription = await stack.enter_async_context(stream)
    await subscription.join()
    reader = asyncio.create_task(_arrivals(subscription, count))
    stop = asyncio.Event()
    relay = source and asyncio.create_task(Relay(source, broker, batch_size=BATCH).run(stop))
    try:
        if raw:
            stamps, elapsed = await _write(db, stack, topic, rate, count, publish=target)
        else:
            stamps, elapsed = await _write_in_another_process(db, topic, rate, count)
        arrivals = await asyncio.wait_for(reader, 60)
    finally:
        stop.set()
        reader.cancel()
        if relay:
            await relay
    return Latency.of([arrivals[key] - stamps[key] for key in arrivals], elapsed)


async def _arrivals(subscription: Any, n: int) -> dict[str, float]:
    """Return when each of the first ``n`` deliveries arrived, by event id."""
    seen: dict[str, float] = {}
    async for delivery in subscription:
        seen[delivery.event.id] = time.perf_counter()
        await delivery.ack()
        if len(seen) == n:
            break
    return seen


async def _write(
    db: _Database,
    stack: AsyncExitStack,
    topic: str,
    rate: int,
    count: int,
    *,
    publish: tuple[Broker, str] | None = None,
) -> tuple[dict[str, float], float]:
    """Commit ``count`` events at ``rate``; return their commit stamps and the seconds taken."""
    stamps: dict[str, float] = {}
    make = _sqlite_committer if db.kind == "sqlite" else _pg_committer
    commit = await make(db, publish is not None, stamps, stack)
    elapsed = await _write_steadily(commit, _rows(count, topic), rate, publish)
    return stamps, elapsed


async def _write_in_another_process(
    db: _Database, topic: str, rate: int, count: int
) -> tuple[dict[str, float], float]:
    """`_write` in a new process (stamps by `time.perf_counter`, the system's monotonic clock)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        args = (db.kind, str(db.directory), db.schema, db.synchronous, topic, rate, count)
        return await asyncio.get_running_loop().run_in_executor(pool, _application, *args)


def _application(
    kind: str, directory: str, schema: str, synchronous: str, topic: str, rate: int, count: int
) -> tuple[dict[str, float], float]:
    """The application process: commit events to the outbox at a steady rate."""

    async def write() -> tuple[dict[str, float], float]:
        async with AsyncExitStack() as stack:
            db = _Database(kind, Path(directory), schema=schema, synchronous=synchronous)
            return await _write(db, stack, topic, rate, count)

    return asyncio.run(write())


async def _write_steadily(
    commit: Commit,
    rows: list[tuple[Event, OutboxRow]],
    rate: int,
    publish: tuple[Broker, str] | None,
) -> float:
    """Start one commit every 1/rate seconds (then its publish, for the raw loop).

    Returns the seconds until the last commit (and publish) returned.
    """

    async def one(event: Event, row: OutboxRow) -> None:
        await commit(event, row)
        if publish is not None:
            await publish[0].publish(publish[1], [event])

    start, tasks = time.perf_counter(), []
    for index, (event, row) in enumerate(rows):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(event, row)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


LATENCY_RUNS: Final = (
    ("sqlite", "sqlite", "FULL"),
    ("sqlite", "sqlite", "NORMAL"),
    ("sqlite", "nats", "FULL"),
    ("postgres", "sqlite", "FULL"),
    ("postgres", "nats", "FULL"),
    ("wal", "nats", "FULL"),
)
"""(database, broker, the SQLite application's ``synchronous``) of the latency runs."""


def main() -> None:
    """Print commit-to-subscriber latency at a steady 1,000 events/s: relay and raw loop."""
    print("commit-to-subscriber latency at a steady 1,000 events/s, one event per commit (ms):")
    for db_kind, broker_kind, synchronous in LATENCY_RUNS:
        for raw in (False, True):
            label = db_kind if db_kind != "sqlite" else f"sqlite({synchronous})"
            name = f"{label}->{broker_kind} {'raw' if raw else 'relay'}"
            try:
                figures = asyncio.run(
                    measure_latency(db_kind, broker_kind, raw=raw, synchronous=synchronous)
                )
            except Skip as skip:
                print(f"  {name:30} skipped: {skip.reason}")
                continue
            print(
                f"  {name:30} p50 {figures.p50:7.2f}  p99 {figures.p99:7.2f}"
                f"  max {figures.max:7.2f}  ({figures.rate:.0f} commits/s reached)"
            )


if __name__ == "__main__":
    main()
