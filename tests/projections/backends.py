"""Read model backends for the projection tests: harnesses and their counter projections.

``sqlite`` makes a fresh file under a temp directory per read model; ``postgres`` a fresh
schema on the service at `POSTGRES_URL` (dropped afterwards); ``redis`` a fresh key prefix on
the service at `REDIS_URL` (its keys deleted afterwards). Every counter projection counts
``count.hit`` events per key (count, and total of positions) and fails on ``count.poison``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Final

from tidings.adapters.postgres.projections import PostgresReadModel, PostgresTx
from tidings.adapters.redis.projections import RedisReadModel, RedisTx
from tidings.adapters.sqlite.projections import SQLiteReadModel, SQLiteTx
from tidings.eventstore.ports import RecordedEvent
from tidings.projections import Projection, ReadModel, handles
from tidings.testing.conformance.checkpoints import Counts, MemoryReadModelHarness

POSTGRES_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL: Final = "redis://127.0.0.1:6379/0"


class SQLiteCounter(Projection[SQLiteTx]):
    """The counter projection on SQLite: one row per key in ``{name}_counters_v{version}``."""

    def __init__(self, *, name: str, version: int = 1) -> None:
        super().__init__(name=name, version=version)
        self.tables = (f"{name}_counters",)

    def setup(self, tx: SQLiteTx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {tx.table(self.tables[0])}"
            " (key TEXT PRIMARY KEY, n INTEGER NOT NULL, total INTEGER NOT NULL)"
        )

    @handles("count.hit")
    def hit(self, record: RecordedEvent, tx: SQLiteTx) -> None:
        tx.execute(
            f"INSERT INTO {tx.table(self.tables[0])} VALUES (?, 1, ?) ON CONFLICT (key)"
            " DO UPDATE SET n = n + 1, total = total + excluded.total",
            (record.event.data["key"], record.position),  # type: ignore[index]
        )

    @handles("count.poison")
    def poison(self, record: RecordedEvent, tx: SQLiteTx) -> None:
        raise ValueError(f"poisoned at {record.position}")


class PostgresCounter(Projection[PostgresTx]):
    """The counter projection on PostgreSQL: a row per key in ``{name}_counters_v{version}``."""

    def __init__(self, *, name: str, version: int = 1) -> None:
        super().__init__(name=name, version=version)
        self.tables = (f"{name}_counters",)

    def setup(self, tx: PostgresTx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {tx.table(self.tables[0])}"
            " (key TEXT PRIMARY KEY, n BIGINT NOT NULL, total BIGINT NOT NULL)"
        )

    @handles("count.hit")
    def hit(self, record: RecordedEvent, tx: PostgresTx) -> None:
        tx.execute(
            f"INSERT INTO {tx.table(self.tables[0])} AS c VALUES (%s, 1, %s) ON CONFLICT (key)"
            " DO UPDATE SET n = c.n + 1, total = c.total + excluded.total",
            (record.event.data["key"], record.position),  # type: ignore[index]
        )

    @handles("count.poison")
    def poison(self, record: RecordedEvent, tx: PostgresTx) -> None:
        raise ValueError(f"poisoned at {record.position}")


class RedisCounter(Projection[RedisTx]):
    """The counter projection on Redis: hashes ``n`` and ``total`` by key."""

    @handles("count.hit")
    def hit(self, record: RecordedEvent, tx: RedisTx) -> None:
        key = str(record.event.data["key"])  # type: ignore[index]
        tx.call("HINCRBY", tx.namespaced("n"), key, 1)
        tx.call("HINCRBY", tx.namespaced("total"), key, record.position)

    @handles("count.poison")
    def poison(self, record: RecordedEvent, tx: RedisTx) -> None:
        raise ValueError(f"poisoned at {record.position}")


class SQLiteHarness:
    """Read models in fresh SQLite files."""

    durable = True

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._made: list[SQLiteReadModel] = []

    async def make(self) -> ReadModel:
        return await self._open(self._directory / f"{uuid.uuid4().hex}.db")

    async def reopen(self, model: ReadModel) -> ReadModel:
        assert isinstance(model, SQLiteReadModel)
        return await self._open(model.path)

    async def _open(self, path: Path) -> ReadModel:
        model = SQLiteReadModel(path)
        self._made.append(model)
        return await model.open()

    def counter(self, name: str, *, version: int = 1) -> Projection[Any]:
        return SQLiteCounter(name=name, version=version)

    async def counts(self, model: ReadModel, projection: Projection[Any]) -> Counts:
        assert isinstance(model, SQLiteReadModel)
        table = f'"{projection.name}_counters_v{projection.version}"'
        rows = await model.fetchall(f"SELECT key, n, total FROM {table}")
        return {key: (n, total) for key, n, total in rows}

    async def aclose(self) -> None:
        for model in self._made:
            await model.aclose()


class PostgresHarness:
    """Read models in fresh PostgreSQL schemas."""

    durable = True

    def __init__(self) -> None:
        self._made: list[PostgresReadModel] = []

    async def make(self) -> ReadModel:
        return await self._open(f"t_{uuid.uuid4().hex}")

    async def reopen(self, model: ReadModel) -> ReadModel:
        assert isinstance(model, PostgresReadModel)
        return await self._open(model.schema)

    async def _open(self, schema: str) -> ReadModel:
        model = PostgresReadModel(POSTGRES_URL, schema=schema)
        self._made.append(model)
        return await model.open()

    def counter(self, name: str, *, version: int = 1) -> Projection[Any]:
        return PostgresCounter(name=name, version=version)

    async def counts(self, model: ReadModel, projection: Projection[Any]) -> Counts:
        assert isinstance(model, PostgresReadModel)
        table = f'"{model.schema}"."{projection.name}_counters_v{projection.version}"'
        rows = await fetch(f"SELECT key, n, total FROM {table}")
        return {key: (n, total) for key, n, total in rows}

    async def aclose(self) -> None:
        for model in self._made:
            await model.aclose()
        for schema in {model.schema for model in self._made}:
            await fetch(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class RedisHarness:
    """Read models under fresh Redis key prefixes."""

    durable = True

    def __init__(self) -> None:
        self._made: list[RedisReadModel] = []

    async def make(self) -> ReadModel:
        return await self._open(f"t{uuid.uuid4().hex}")

    async def reopen(self, model: ReadModel) -> ReadModel:
        assert isinstance(model, RedisReadModel)
        return await self._open(model.prefix)

    async def _open(self, prefix: str) -> ReadModel:
        model = RedisReadModel(REDIS_URL, prefix=prefix)
        self._made.append(model)
        return await model.open()

    def counter(self, name: str, *, version: int = 1) -> Projection[Any]:
        return RedisCounter(name=name, version=version)

    async def counts(self, model: ReadModel, projection: Projection[Any]) -> Counts:
        assert isinstance(model, RedisReadModel)
        space = await model.namespace(projection.name, projection.version)
        counts = await model.client.hgetall(f"{space}n")
        totals = await model.client.hgetall(f"{space}total")
        return {k.decode(): (int(v), int(totals[k])) for k, v in counts.items()}

    async def aclose(self) -> None:
        for model in self._made:
            await model.aclose()
        await delete_prefixes({model.prefix for model in self._made})


async def fetch(statement: str) -> list[tuple[Any, ...]]:
    """Run one statement on the PostgreSQL service; return its rows (none for DDL)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        cursor = await conn.execute(statement)  # type: ignore[arg-type]
        return await cursor.fetchall() if cursor.description else []


async def delete_prefixes(prefixes: set[str]) -> None:
    """Delete every Redis key under the prefixes."""
    from redis.asyncio import Redis

    client: Redis = Redis.from_url(REDIS_URL)
    async with client:
        for prefix in prefixes:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.unlink(*keys)


def harness(backend: str, tmp_path: Path) -> Any:
    """Return a new harness of one backend."""
    if backend == "memory":
        return MemoryReadModelHarness()
    if backend == "sqlite":
        return SQLiteHarness(tmp_path)
    return PostgresHarness() if backend == "postgres" else RedisHarness()


def counter(backend: str, name: str, *, version: int = 1) -> Projection[Any]:
    """Return the counter projection of a durable backend."""
    kinds = {"sqlite": SQLiteCounter, "postgres": PostgresCounter, "redis": RedisCounter}
    return kinds[backend](name=name, version=version)


def location(model: ReadModel) -> str:
    """Return where a durable read model keeps its data: a file, a schema or a key prefix."""
    if isinstance(model, SQLiteReadModel):
        return str(model.path)
    if isinstance(model, PostgresReadModel):
        return model.schema
    assert isinstance(model, RedisReadModel)
    return model.prefix


def read_model_at(backend: str, where: str) -> ReadModel:
    """Return an unopened read model of a durable backend at a `location`."""
    if backend == "sqlite":
        return SQLiteReadModel(where)
    if backend == "postgres":
        return PostgresReadModel(POSTGRES_URL, schema=where)
    return RedisReadModel(REDIS_URL, prefix=where)
