"""Idempotent consumers: consume+ack throughput with and without ``dedupe``, and SMS latency.

Consume cases: a `tidings.App` (group ``bench``, concurrency 32) on a fresh SQLite broker file
(``synchronous=NORMAL``) consumes N events published beforehand (64 keys) and acks each; the
figure is events consumed and acked per second, from the app's start until the last ack.

- ``consume/none``: the handler does nothing; no dedupe. The baseline of every other case.
- ``consume/sqlite.inbox``: ``dedupe(SQLiteInbox)`` on the broker's file: each delivery's key
  is committed in a transaction of its own (group-committed with its neighbours) before the ack.
- ``consume/postgres.inbox``: ``dedupe(PostgresInbox)``: a PostgreSQL transaction per delivery.
- ``consume/redis.store``: ``dedupe(RedisDedupStore)``: a claim and a record per delivery.
- ``consume/sqlite.store``, ``consume/postgres.store``: ``dedupe`` over the SQL stores without
  their transaction (claim + record: two writes per delivery).

SMS cases (the example 06 consumer, concurrency 1, the local fake provider answering at once):
deliveries handled per second by each mechanism of docs/idempotency.md, so 1000 / figure is
the milliseconds one delivery costs; ``sms/unprotected`` is the baseline.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Final

from benchmarks.api import Case, Cases, skip_unless_reachable
from tidings import App, Event
from tidings.adapters.sqlite.broker import SQLiteBroker
from tidings.idempotency import upsert
from tidings.messaging.middleware.dedupe import dedupe

PACKAGES: Final = ("psycopg", "redis", "httpx", "uvicorn")
CASES = Cases()

EVENTS: Final = 5_000
SMS: Final = 300
PG_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL: Final = "redis://127.0.0.1:6379/0"
_EXAMPLE: Final = (
    Path(__file__).resolve().parents[1] / "examples" / "06_idempotent_notifications.py"
)


async def _until(check: Any, timeout: float = 300.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the app's counters have no event to await
            await asyncio.sleep(0.002)


class Consume:
    """An app consuming N events from a fresh SQLite broker, behind one kind of dedupe.

    ``target`` is ``none`` or ``<backend>[.inbox|.store]``; with ``effect`` the handler also
    upserts one row (SQLite, PostgreSQL) or hash field (Redis) per event: in its own
    transaction without dedupe, through the inbox's transaction with it.
    """

    def __init__(self, target: str, *, effect: bool = False) -> None:
        self.target = target
        self.effect = effect
        self.backend, _, self.kind = target.partition(".")

    async def setup(self, size: int) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tidings-bench-idem-"))
        self.broker = await SQLiteBroker(self.folder / "b.db", synchronous="NORMAL").open()
        self.dedup = await self._open_target()
        self.writer = await _Writer.open(self) if self.effect else None
        for start in range(0, size, 500):
            events = [_event(n) for n in range(start, min(size, start + 500))]
            for key in range(64):
                batch = [e for e in events if e.partitionkey == f"k{key}"]
                if batch:
                    await self.broker.publish("orders", batch, key=f"k{key}")
        middleware = [] if self.dedup is None else [dedupe(self.dedup)]
        self.app = App(self.broker, group="bench", middleware=middleware, prefetch=256)
        writer = self.writer

        @self.app.handler("orders")
        async def handle(event: Event) -> None:
            """Nothing, or one upsert: the figure is what consuming, deduping and acking cost."""
            if writer is not None:
                await writer.write(event)

    async def _open_target(self) -> Any:
        if self.backend in ("none", "sqlite") and not self.kind:
            return None
        if self.backend == "redis":
            skip_unless_reachable("127.0.0.1", 6379, service="Redis")
            self.prefix = f"bench-{uuid.uuid4().hex}"
            if not self.kind:
                return None
            from tidings.adapters.redis.dedup import RedisDedupStore

            return await RedisDedupStore(REDIS_URL, prefix=self.prefix).open()
        if self.backend == "sqlite":
            from tidings.adapters.sqlite import dedup as sqlite

            cls = sqlite.SQLiteInbox if self.kind == "inbox" else sqlite.SQLiteDedupStore
            return await cls(self.folder / "effects.db", synchronous="NORMAL").open()
        skip_unless_reachable("127.0.0.1", 5432, service="PostgreSQL")
        from tidings.adapters.postgres import dedup as pg

        self.schema = f"bench_{uuid.uuid4().hex}"
        if not self.kind:
            return None
        pg_cls = pg.PostgresInbox if self.kind == "inbox" else pg.PostgresDedupStore
        return await pg_cls(PG_URL, schema=self.schema, min_size=32, max_size=32).open()

    async def run(self, size: int) -> None:
        async with self.app.running():
            await _until(lambda: self.app.stats.acked >= size)

    async def teardown(self) -> None:
        if self.writer is not None:
            await self.writer.aclose()
        if self.dedup is not None:
            await self.dedup.aclose()
        await self.broker.aclose()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.backend == "postgres":
            await _drop_schema(self.schema)
        if self.backend == "redis":
            await _drop_keys(self.prefix)


class _Writer:
    """Writes one event's effect: an upsert, in the inbox's transaction or in one of its own."""

    def __init__(self, case: Consume) -> None:
        self.case = case
        self.inbox: Any = case.dedup if case.kind == "inbox" else None

    @classmethod
    async def open(cls, case: Consume) -> _Writer:
        writer = cls(case)
        await writer._open()
        return writer

    async def _open(self) -> None:
        backend = self.case.backend
        if backend == "sqlite":
            from tidings.adapters.sqlite.broker_commit import GroupCommit
            from tidings.adapters.sqlite.connection import SQLiteThread

            self.thread = SQLiteThread(self.case.folder / "effects.db", synchronous="NORMAL")
            await self.thread.start()
            await self.thread.run(lambda c: c.execute(_SQLITE_TABLE))
            self.commit = GroupCommit(self.thread)
        elif backend == "postgres":
            from psycopg_pool import AsyncConnectionPool

            self.pool: Any = AsyncConnectionPool(
                PG_URL, min_size=32, max_size=32, kwargs={"autocommit": True}, open=False
            )
            await self.pool.open(wait=True)
            self.table = f'"{self.case.schema}".effects'
            async with self.pool.connection() as conn:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.case.schema}"'.encode())
                await conn.execute(_PG_TABLE.format(table=self.table).encode())
            self.upsert = _PG_UPSERT.format(table=self.table).encode()
        else:
            import redis.asyncio as aioredis

            self.redis: Any = aioredis.Redis.from_url(REDIS_URL)
            self.hash = f"{self.case.prefix}:effects"

    async def write(self, event: Event) -> None:
        row = (event.id, event.data["n"])  # type: ignore[index]
        backend = self.case.backend
        if backend == "sqlite" and self.inbox is not None:
            self.inbox.current().execute(_SQLITE_UPSERT, row)
        elif backend == "sqlite":
            await self.commit.run(lambda conn, _: conn.execute(_SQLITE_UPSERT, row))
        elif backend == "postgres" and self.inbox is not None:
            await self.inbox.current().execute(self.upsert, row)
        elif backend == "postgres":
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(self.upsert, row)
        else:
            await self.redis.hset(self.hash, event.id, row[1])

    async def aclose(self) -> None:
        backend = self.case.backend
        if backend == "sqlite":
            await self.commit.drain()
            await self.thread.close()
        elif backend == "postgres":
            await self.pool.close()
        else:
            await self.redis.aclose()


_SQLITE_TABLE: Final = "CREATE TABLE IF NOT EXISTS effects (id TEXT PRIMARY KEY, n INTEGER)"
_SQLITE_UPSERT: Final = upsert("effects", ["id", "n"], key=["id"])
_PG_TABLE: Final = "CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, n BIGINT)"
_PG_UPSERT: Final = (
    "INSERT INTO {table} (id, n) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET n = excluded.n"
)


def _event(number: int) -> Event:
    return Event(type="o", source="/b", data={"n": number}, partitionkey=f"k{number % 64}")


async def _drop_schema(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


async def _drop_keys(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{prefix}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start : start + 1000])
    await client.aclose()


def _consume(target: str, description: str, *, effect: bool = False) -> None:
    case = Consume(target, effect=effect)
    prefix = "effect" if effect else "consume"
    baseline = f"{prefix}/{target.partition('.')[0]}" if effect else f"{prefix}/none"
    CASES.append(
        Case(
            name=f"{prefix}/{target}",
            run=case.run,
            setup=case.setup,
            teardown=case.teardown,
            size=EVENTS,
            quick_size=1_000,
            baseline=None if f"{prefix}/{target}" == baseline else baseline,
            description=description,
        )
    )


_consume("none", "App on the SQLite broker, empty handler, no dedupe")
_consume("sqlite.inbox", "+ dedupe(SQLiteInbox): key committed before each ack")
_consume("postgres.inbox", "+ dedupe(PostgresInbox): a transaction per delivery")
_consume("redis.store", "+ dedupe(RedisDedupStore): claim + record per delivery")
_consume("sqlite.store", "+ dedupe(SQLiteDedupStore): claim + record per delivery")
_consume("postgres.store", "+ dedupe(PostgresDedupStore): claim + record per delivery")
_consume("sqlite", "handler upserts a row, group-committed, no dedupe", effect=True)
_consume("sqlite.inbox", "the same upsert through dedupe(SQLiteInbox)", effect=True)
_consume("postgres", "handler upserts a row in a transaction, no dedupe", effect=True)
_consume("postgres.inbox", "the same upsert through dedupe(PostgresInbox)", effect=True)
_consume("redis", "handler sets a hash field, no dedupe", effect=True)
_consume("redis.store", "the same write behind dedupe(RedisDedupStore)", effect=True)


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("example_06", _EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_06"] = module
    spec.loader.exec_module(module)
    return module


class Notify:
    """Example 06's consumer with one mechanism, handling N shipped orders one at a time."""

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism

    async def setup(self, size: int) -> None:
        from tidings.adapters.memory.broker import MemoryBroker
        from tidings.adapters.sqlite.dedup import SQLiteDedupStore

        ex = _example()
        self.folder = Path(tempfile.mkdtemp(prefix="tidings-bench-sms-"))
        self.provider = ex.FakeSmsProvider(latency=0.0)
        self.sms = ex.SmsClient(await self.provider.start())
        self.broker = await MemoryBroker().open()
        self.store = await SQLiteDedupStore(self.folder / "d.db", synchronous="NORMAL").open()
        self.app = ex.build_app(self.mechanism, self.broker, self.sms, self.store, ex.Timings())
        self.app.concurrency = 1
        for n in range(size):
            order = ex.OrderShipped(f"o-{n}", f"+1{n:010d}")
            event = ex.types.to_event(order, source="/bench")
            await self.broker.publish(ex.topic_of(self.mechanism), [event], key=order.order_id)

    async def run(self, size: int) -> None:
        async with self.app.running():
            await _until(lambda: self.app.stats.acked >= size)

    async def teardown(self) -> None:
        await self.store.aclose()
        await self.broker.aclose()
        await self.sms.aclose()
        await self.provider.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


for _mechanism in ("unprotected", "dedup-key", "provider-key", "state-machine"):
    _notify = Notify(_mechanism)
    CASES.append(
        Case(
            name=f"sms/{_mechanism}",
            run=_notify.run,
            setup=_notify.setup,
            teardown=_notify.teardown,
            unit="deliveries/s",
            size=SMS,
            quick_size=100,
            baseline=None if _mechanism == "unprotected" else "sms/unprotected",
            description=f"example 06, {_mechanism}: one delivery at a time, HTTP to the provider",
        )
    )
