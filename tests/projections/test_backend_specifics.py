"""What differs between read model backends: SQLite threads, PostgreSQL bulk writes, Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.projections.backends import PostgresHarness, RedisHarness, fetch
from tests.projections.helpers import append, hits, unique

from tidings.adapters.memory.eventstore import MemoryEventStore
from tidings.adapters.postgres.projections import PostgresReadModel, PostgresTx
from tidings.adapters.redis.projections import RedisReadModel, RedisTx
from tidings.adapters.sqlite.projections import SQLiteReadModel, SQLiteTx
from tidings.errors import ConfigurationError
from tidings.eventstore.ports import RecordedEvent
from tidings.projections import (
    Projection,
    ProjectionFailedError,
    ProjectionRunner,
    ReadModel,
    handles,
)


@pytest.fixture
async def store() -> AsyncIterator[MemoryEventStore]:
    """A fresh in-memory event store."""
    async with MemoryEventStore() as made:
        yield made


class AsyncOnSQLite(Projection[SQLiteTx]):
    name = "async_on_sqlite"

    @handles("count.hit")
    async def hit(self, record: RecordedEvent, tx: SQLiteTx) -> None: ...


class Committing(Projection[SQLiteTx]):
    name = "committing"

    @handles("count.hit")
    def hit(self, record: RecordedEvent, tx: SQLiteTx) -> None:
        tx.execute("COMMIT")


class Positive(Projection[PostgresTx]):
    """Copies each key into a table that refuses the key ``bad``; sums through fetch."""

    tables = ("keys",)

    def setup(self, tx: PostgresTx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {tx.table('keys')}"
            " (position BIGINT PRIMARY KEY, key TEXT CHECK (key <> 'bad'), seen BIGINT)"
        )

    @handles("count.hit")
    async def hit(self, record: RecordedEvent, tx: PostgresTx) -> None:
        rows = await tx.fetch(f"SELECT count(*) FROM {tx.table('keys')}")
        key = record.event.data["key"]  # type: ignore[index]
        tx.copy("keys", ("position", "key", "seen"), (record.position, key, rows[0][0]))


class WrongType(Projection[RedisTx]):
    """Pushes onto a list, except that key ``bad`` increments the list as a hash field."""

    @handles("count.hit")
    def hit(self, record: RecordedEvent, tx: RedisTx) -> None:
        tx.call("RPUSH", tx.namespaced("keys"), str(record.event.data["key"]))  # type: ignore[index]
        if record.event.data["key"] == "bad":  # type: ignore[index]
            tx.call("HINCRBY", tx.namespaced("keys"), "n", 1)


async def test_sqlite_refuses_async_handlers(tmp_path: Path) -> None:
    async with SQLiteReadModel(tmp_path / "views.db") as model:
        with pytest.raises(ConfigurationError, match="not async def"):
            await model.prepare(AsyncOnSQLite())


async def test_sqlite_handler_that_commits_fails_its_event(
    store: MemoryEventStore, tmp_path: Path
) -> None:
    await append(store, hits("a"))
    async with (
        SQLiteReadModel(tmp_path / "views.db") as model,
        ProjectionRunner(store, model, [Committing()]) as runner,
    ):
        with pytest.raises(ProjectionFailedError, match="ended the batch's transaction"):
            await runner.wait_for(1, timeout=5)


@pytest.mark.postgres
async def test_postgres_sql_error_names_the_event_whose_statement_failed(
    store: MemoryEventStore,
) -> None:
    made = PostgresHarness()
    try:
        model = await made.make()
        assert isinstance(model, PostgresReadModel)
        projection = Positive(name=unique())
        await append(store, hits("a", "b", "bad", "c"))
        async with ProjectionRunner(store, model, [projection]) as runner:
            with pytest.raises(ProjectionFailedError, match="position 3"):
                await runner.wait_for(4, timeout=5)
        rows = await fetch(f'SELECT key, seen FROM "{model.schema}".keys_v1 ORDER BY position')
    finally:
        await made.aclose()
    assert rows == [("a", 0), ("b", 1)]


@pytest.mark.redis
async def test_redis_command_error_keeps_the_events_before_it(store: MemoryEventStore) -> None:
    made = RedisHarness()
    try:
        model = await made.make()
        assert isinstance(model, RedisReadModel)
        projection = WrongType(name=unique())
        await append(store, hits("a", "b", "bad", "c"))
        async with ProjectionRunner(store, model, [projection]) as runner:
            with pytest.raises(ProjectionFailedError, match="WRONGTYPE"):
                await runner.wait_for(4, timeout=5)
        state = await _state(model, projection)
        space = await model.namespace(projection.name)
        keys = await model.client.lrange(f"{space}keys", 0, -1)
    finally:
        await made.aclose()
    assert state == 2
    assert keys == [b"a", b"b", b"bad"]  # Redis cannot roll back the failing event's RPUSH


async def _state(model: ReadModel, projection: Projection[RedisTx]) -> int:
    state = await model.lookup(projection.key)
    assert state is not None
    return state.position
