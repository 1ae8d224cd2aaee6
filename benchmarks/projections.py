"""Projections: catch-up rate with the checkpoint in the same transaction, and lag under load.

Every catch-up case projects the same log of N ``order.placed`` events (data ``{order,
customer, cents}``) into a table with one row per event, from position 0, in batches of 500
events per transaction. The log is filled once per process (SQLite: a file on disk;
PostgreSQL: a schema of its own); each measured run writes a fresh read model.

- ``sqlite/tidings``: a `Projection` whose handler inserts the row through `SQLiteTx`, run
  by a `ProjectionRunner` (subscribe, decode, batch, fenced checkpoint, commit) into a
  `SQLiteReadModel` (WAL, ``synchronous=NORMAL``).
- ``sqlite/raw``: the baseline: sqlite3 doing the same inserts, ``executemany`` of the same
  rows (precomputed), 500 per transaction, same pragmas, no log reading at all: the floor.
- ``sqlite/raw.projector``: a hand-written projector: sqlite3 pages through the event table,
  msgspec decodes each envelope's data into a Struct, inserts the rows and updates a
  checkpoint row, 500 events per transaction.
- ``postgres/tidings`` (handler ``tx.execute``: one ``executemany`` per batch) and
  ``postgres/tidings.copy`` (handler ``tx.copy``: one ``COPY`` per batch), reading the
  PostgreSQL event store; baselines ``postgres/raw`` (psycopg ``executemany``, pipeline mode)
  and ``postgres/raw.copy`` (``COPY``), 500 rows a transaction, rows precomputed.
- ``lag/{sqlite,postgres,redis}``: a live runner while events are appended at 1,000 events/s
  (10 every 10 ms) for 2 s; the figure is events applied per second (it keeps up when it is
  about 1,000), and the lag of every event (its commit into the read model minus its commit
  into the log) is summarised as p50 and p99 on stderr after each run; ``python -m
  benchmarks.projections`` prints just those percentiles.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import msgspec

from benchmarks.api import Case, Cases, skip_unless_reachable
from tidings import Event
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.adapters.sqlite.projections import SQLiteReadModel, SQLiteTx
from tidings.eventstore.ports import EventStore, RecordedEvent
from tidings.projections import Batch, Projection, ProjectionRunner, ReadModel, handles

PACKAGES: Final = ("psycopg", "redis", "msgspec")
CASES = Cases()

EVENTS: Final = 50_000
BATCH: Final = 500
PG_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL: Final = "redis://127.0.0.1:6379/0"
LAG_RATE: Final = 1_000
LAG_SECONDS: Final = 2.0
LAGS: dict[str, list[tuple[float, float]]] = {}
"""Case name -> (p50, p99) in milliseconds, one pair per measured run."""

_DIR = Path(tempfile.mkdtemp(prefix="tidings-bench-projections-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


class _Data(msgspec.Struct):
    order: str
    customer: str
    cents: int


class _Envelope(msgspec.Struct):
    data: _Data


def _event(number: int) -> Event:
    data = {"order": f"o-{number}", "customer": f"c-{number % 997}", "cents": number % 10_000}
    return Event(type="order.placed", source="/bench", data=data)


def _rows(size: int) -> list[tuple[int, str, str, int]]:
    return [(n, f"o-{n}", f"c-{(n - 1) % 997}", (n - 1) % 10_000) for n in range(1, size + 1)]


async def _fill(store: EventStore, size: int) -> None:
    for start in range(0, size, 1_000):
        count = min(1_000, size - start)
        await store.append(f"orders-{start}", [_event(start + i) for i in range(count)])


# -- the projections --------------------------------------------------------------------------


class SQLiteOrders(Projection[SQLiteTx]):
    """One row per order, into ``orders_v1`` on SQLite."""

    name = "orders"
    tables = ("orders",)
    _insert = 'INSERT INTO "orders_v1" VALUES (?, ?, ?, ?)'

    def setup(self, tx: SQLiteTx) -> None:
        tx.execute(f"CREATE TABLE IF NOT EXISTS {tx.table('orders')} ({_COLUMNS})")

    @handles("order.placed")
    def placed(self, record: RecordedEvent, tx: SQLiteTx) -> None:
        data: Any = record.event.data
        tx.execute(self._insert, (record.position, data["order"], data["customer"], data["cents"]))


_COLUMNS: Final = "position INTEGER PRIMARY KEY, order_id TEXT, customer TEXT, cents INTEGER"


def _postgres_orders(copy: bool) -> Projection[Any]:
    from tidings.adapters.postgres.projections import PostgresTx

    class PostgresOrders(Projection[PostgresTx]):
        name = "orders"
        tables = ("orders",)

        def setup(self, tx: PostgresTx) -> None:
            tx.execute(f"CREATE TABLE IF NOT EXISTS {tx.table('orders')} ({_PG_COLUMNS})")
            self.insert = f"INSERT INTO {tx.table('orders')} VALUES (%s, %s, %s, %s)"

        @handles("order.placed")
        def placed(self, record: RecordedEvent, tx: PostgresTx) -> None:
            data: Any = record.event.data
            row = (record.position, data["order"], data["customer"], data["cents"])
            if copy:
                tx.copy("orders", _PG_NAMES, row)
            else:
                tx.execute(self.insert, row)

    return PostgresOrders()


_PG_COLUMNS: Final = "position BIGINT PRIMARY KEY, order_id TEXT, customer TEXT, cents BIGINT"
_PG_NAMES: Final = ("position", "order_id", "customer", "cents")


# -- SQLite ------------------------------------------------------------------------------------


def _sqlite_log(size: int) -> Path:
    """Return a SQLite event store file holding ``size`` events (filled once per process)."""
    path = _DIR / f"log-{size}.db"
    if not path.exists():  # filled on a thread of its own: setups may run inside a loop
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, _fill_sqlite(path, size)).result()
    return path


async def _fill_sqlite(path: Path, size: int) -> None:
    async with SQLiteEventStore(path, synchronous="NORMAL") as store:
        await _fill(store, size)


class SQLiteCatchUp:
    """A runner catching up a fresh SQLite read model over the whole log."""

    async def setup(self, size: int) -> None:
        self.views = _DIR / f"views-{uuid.uuid4().hex}.db"
        self.store = await SQLiteEventStore(_sqlite_log(size)).open()
        self.model = await SQLiteReadModel(self.views).open()

    async def run(self, size: int) -> None:
        await _catch_up(self.store, self.model, SQLiteOrders(), size)

    async def teardown(self) -> None:
        await self.model.aclose()
        await self.store.aclose()
        _remove(self.views)


async def _catch_up(store: EventStore, model: ReadModel, projection: Any, size: int) -> None:
    async with ProjectionRunner(store, model, [projection], batch_size=BATCH) as runner:
        await runner.wait_for(size, timeout=300)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _sqlite_views() -> tuple[Path, sqlite3.Connection]:
    path = _DIR / f"raw-{uuid.uuid4().hex}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"CREATE TABLE orders ({_COLUMNS})")
    conn.execute("CREATE TABLE checkpoint (id INTEGER PRIMARY KEY, position INTEGER)")
    conn.execute("INSERT INTO checkpoint VALUES (1, 0)")
    return path, conn


class SQLiteRaw:
    """sqlite3: the same rows, ``executemany`` 500 per transaction."""

    def setup(self, size: int) -> None:
        self.rows = _rows(size)
        self.path, self.conn = _sqlite_views()

    def run(self, size: int) -> None:
        for start in range(0, size, BATCH):
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?)", self.rows[start : start + BATCH]
            )
            self.conn.execute("COMMIT")

    def teardown(self) -> None:
        self.conn.close()
        _remove(self.path)


class SQLiteRawProjector(SQLiteRaw):
    """sqlite3 + msgspec: read the log in pages, decode, insert, move a checkpoint row."""

    def setup(self, size: int) -> None:
        super().setup(size)
        self.log = sqlite3.connect(_sqlite_log(size))
        self.decode = msgspec.json.Decoder(_Envelope).decode

    def run(self, size: int) -> None:
        position = 0
        while position < size:
            rows = self.log.execute(_PAGE, (position, BATCH)).fetchall()
            batch = [(p, *self._fields(envelope)) for p, envelope in rows]
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", batch)
            position = rows[-1][0]
            self.conn.execute("UPDATE checkpoint SET position = ? WHERE id = 1", (position,))
            self.conn.execute("COMMIT")

    def _fields(self, envelope: bytes) -> tuple[str, str, int]:
        data = self.decode(envelope).data
        return data.order, data.customer, data.cents

    def teardown(self) -> None:
        self.log.close()
        super().teardown()


_PAGE: Final = (
    "SELECT position, envelope FROM tidings_events WHERE position > ? ORDER BY position LIMIT ?"
)


# -- PostgreSQL --------------------------------------------------------------------------------

_PG_LOGS: dict[int, str] = {}


async def _pg_log(size: int) -> str:
    """Return the schema of a PostgreSQL event store holding ``size`` events (filled once)."""
    from tidings.adapters.postgres.eventstore import PostgresEventStore

    if size not in _PG_LOGS:
        schema = f"bench_log_{uuid.uuid4().hex[:10]}"
        async with PostgresEventStore(PG_URL, schema=schema) as store:
            await _fill(store, size)
        _PG_LOGS[size] = schema
        atexit.register(_drop_schema_sync, schema)
    return _PG_LOGS[size]


def _drop_schema_sync(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]


class PostgresCatchUp:
    """A runner catching up a fresh PostgreSQL read model over the PostgreSQL log."""

    def __init__(self, *, copy: bool) -> None:
        self.copy = copy

    async def setup(self, size: int) -> None:
        from tidings.adapters.postgres.eventstore import PostgresEventStore
        from tidings.adapters.postgres.projections import PostgresReadModel

        skip_unless_reachable("127.0.0.1", 5432, service="PostgreSQL")
        self.views = f"bench_views_{uuid.uuid4().hex[:10]}"
        self.store = await PostgresEventStore(PG_URL, schema=await _pg_log(size)).open()
        self.model = await PostgresReadModel(PG_URL, schema=self.views).open()

    async def run(self, size: int) -> None:
        await _catch_up(self.store, self.model, _postgres_orders(self.copy), size)

    async def teardown(self) -> None:
        await self.model.aclose()
        await self.store.aclose()
        await asyncio.to_thread(_drop_schema_sync, self.views)


class PostgresRaw:
    """psycopg: the same rows, 500 a transaction, by ``executemany`` or ``COPY``."""

    def __init__(self, *, copy: bool) -> None:
        self.copy = copy

    async def setup(self, size: int) -> None:
        import psycopg

        skip_unless_reachable("127.0.0.1", 5432, service="PostgreSQL")
        self.rows, self.schema = _rows(size), f"bench_raw_{uuid.uuid4().hex[:10]}"
        self.conn = await psycopg.AsyncConnection.connect(PG_URL, autocommit=True)
        await self.conn.execute(f'CREATE SCHEMA "{self.schema}"')  # type: ignore[arg-type]
        await self.conn.execute(f'CREATE TABLE "{self.schema}".orders ({_PG_COLUMNS})')  # type: ignore[arg-type]

    async def run(self, size: int) -> None:
        for start in range(0, size, BATCH):
            async with self.conn.transaction():
                await self._write(self.rows[start : start + BATCH])

    async def _write(self, rows: list[tuple[int, str, str, int]]) -> None:
        table = f'"{self.schema}".orders'
        if self.copy:
            async with self.conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:  # type: ignore[arg-type]
                for row in rows:
                    await copy.write_row(row)
            return
        async with self.conn.pipeline(), self.conn.cursor() as cursor:
            await cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", rows)  # type: ignore[arg-type]

    async def teardown(self) -> None:
        await self.conn.execute(f'DROP SCHEMA "{self.schema}" CASCADE')  # type: ignore[arg-type]
        await self.conn.close()


def _declare(name: str, state: Any, description: str, **extra: Any) -> None:
    CASES.append(
        Case(
            name=name,
            run=state.run,
            setup=state.setup,
            teardown=state.teardown,
            size=extra.pop("size", EVENTS),
            description=description,
            **extra,
        )
    )


_declare(
    "sqlite/tidings",
    SQLiteCatchUp(),
    "runner: SQLite log -> SQLite table, checkpoint in the same commit",
    baseline="sqlite/raw",
    peers=("sqlite/raw.projector",),
)
_declare("sqlite/raw", SQLiteRaw(), "sqlite3 executemany of the same rows, 500 a transaction")
_declare("sqlite/raw.projector", SQLiteRawProjector(), "sqlite3 + msgspec hand-written projector")
_declare(
    "postgres/tidings",
    PostgresCatchUp(copy=False),
    "runner: PostgreSQL log -> table via tx.execute (executemany), checkpoint in the commit",
    baseline="postgres/raw",
    peers=("postgres/raw.copy",),
)
_declare(
    "postgres/tidings.copy",
    PostgresCatchUp(copy=True),
    "the same via tx.copy (COPY)",
    baseline="postgres/raw.copy",
    peers=("postgres/raw",),
)
_declare("postgres/raw", PostgresRaw(copy=False), "psycopg executemany, 500 rows a transaction")
_declare("postgres/raw.copy", PostgresRaw(copy=True), "psycopg COPY, 500 rows a transaction")


# -- lag under a steady load -------------------------------------------------------------------


class Lag:
    """A live runner while events are appended at 1,000 events/s; lag per event recorded."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.name = f"lag/{backend}"

    async def setup(self, size: int) -> None:
        self.lags: list[float] = []
        self.store, self.model, self.cleanup = await _lag_backend(self.backend)
        projection = SQLiteOrders() if self.backend == "sqlite" else _lag_projection(self.backend)
        self.runner = ProjectionRunner(self.store, self.model, [projection], on_commit=self._seen)
        await self.runner.open()

    def _seen(self, batch: Batch) -> None:
        now = time.time_ns() // 1000
        self.lags += [(now - r.recorded_at_us) / 1000 for r in batch.records]

    async def run(self, size: int) -> int:
        loop, tick, last = asyncio.get_running_loop(), 0, 0
        start = loop.time()
        while tick * 10 < size:
            await asyncio.sleep(max(0.0, start + tick * 0.01 - loop.time()))
            events = [_event(tick * 10 + i) for i in range(10)]
            last = (await self.store.append(f"lag-{tick % 50}", events)).position
            tick += 1
        await self.runner.wait_for(last, timeout=30)
        return tick * 10

    async def teardown(self) -> None:
        await self.runner.aclose()
        await self.model.aclose()
        await self.store.aclose()
        await self.cleanup()
        ordered = sorted(self.lags) or [0.0]
        p50, p99 = (
            ordered[len(ordered) // 2],
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        )
        LAGS.setdefault(self.name, []).append((p50, p99))
        print(f"{self.name}: lag p50 {p50:.2f} ms, p99 {p99:.2f} ms", file=sys.stderr)


async def _lag_backend(backend: str) -> tuple[EventStore, ReadModel, Any]:
    path = _DIR / f"lag-{uuid.uuid4().hex}.db"
    if backend == "sqlite":
        store = await SQLiteEventStore(path, synchronous="NORMAL").open()
        model: ReadModel = await SQLiteReadModel(_DIR / f"lagviews-{uuid.uuid4().hex}.db").open()
        return store, model, _nothing
    if backend == "postgres":
        from tidings.adapters.postgres.eventstore import PostgresEventStore
        from tidings.adapters.postgres.projections import PostgresReadModel

        skip_unless_reachable("127.0.0.1", 5432, service="PostgreSQL")
        schema = f"bench_lag_{uuid.uuid4().hex[:10]}"
        store_pg = await PostgresEventStore(PG_URL, schema=schema).open()
        model = await PostgresReadModel(PG_URL, schema=schema).open()
        return store_pg, model, lambda: asyncio.to_thread(_drop_schema_sync, schema)
    from tidings.adapters.redis.projections import RedisReadModel

    skip_unless_reachable("127.0.0.1", 6379, service="Redis")
    prefix = f"bench-lag-{uuid.uuid4().hex[:8]}"
    store = await SQLiteEventStore(path, synchronous="NORMAL").open()
    model = await RedisReadModel(REDIS_URL, prefix=prefix).open()
    return store, model, lambda: _drop_redis(model, prefix)


async def _nothing() -> None:
    return None


async def _drop_redis(model: Any, prefix: str) -> None:
    from redis.asyncio import Redis

    async with Redis.from_url(REDIS_URL) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.unlink(*keys)


def _lag_projection(backend: str) -> Projection[Any]:
    if backend == "postgres":
        return _postgres_orders(copy=False)
    from tidings.adapters.redis.projections import RedisTx

    class RedisOrders(Projection[RedisTx]):
        name = "orders"

        @handles("order.placed")
        def placed(self, record: RecordedEvent, tx: RedisTx) -> None:
            data: Any = record.event.data
            tx.call("HSET", tx.namespaced("orders"), data["order"], data["cents"])

    return RedisOrders()


for _backend in ("sqlite", "postgres", "redis"):
    _lag = Lag(_backend)
    _declare(
        _lag.name,
        _lag,
        f"events/s applied while 1,000 events/s are appended ({_backend}); lag p50/p99 on stderr",
        unit="events/s",
        size=int(LAG_RATE * LAG_SECONDS),
        quick_size=500,
    )


def main() -> None:
    """Measure only the lag cases, three runs each, and print the median p50 and p99."""
    from benchmarks.runner import measure_once

    for case in CASES:
        if case.name.startswith("lag/"):
            for _ in range(3):
                measure_once(case, case.size)
            runs = LAGS.get(case.name, [])
            p50 = statistics.median(r[0] for r in runs)
            p99 = statistics.median(r[1] for r in runs)
            print(f"{case.name:14} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   ({len(runs)} runs)")


if __name__ == "__main__":
    main()
