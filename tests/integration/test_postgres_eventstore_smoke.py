"""Smoke tests of the PostgreSQL event store against a real server, each in its own schema.

The shared conformance suite checks the whole contract; these check what is particular to
PostgreSQL: dense positions under concurrent writers, the post-commit sequencer healing rows
that a dead writer left unpositioned, LISTEN/NOTIFY wake-ups, and error translation.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Sequence

import psycopg
import pytest
from psycopg import sql

from tidings.adapters.postgres.connection import conninfo_from_url
from tidings.adapters.postgres.eventstore import PostgresEventStore
from tidings.errors import (
    BackendUnavailableError,
    CheckpointConflict,
    ClosedError,
    ConcurrencyConflict,
    ConfigurationError,
)
from tidings.events import Event
from tidings.eventstore.ports import NO_STREAM, Checkpoint, RecordedEvent, StreamAppend

pytestmark = pytest.mark.postgres

URL = os.environ.get("TIDINGS_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _events(count: int, kind: str = "thing.happened") -> list[Event]:
    return [Event(type=kind, source="/smoke", data={"n": n}) for n in range(count)]


async def _execute(query: sql.Composable) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cursor = await conn.execute(query)
        return await cursor.fetchall() if cursor.description else []


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"smoke_{uuid.uuid4().hex[:12]}"
    try:
        await _execute(sql.SQL("SELECT 1"))
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {URL}: {exc}")
    yield name
    await _execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
async def store(schema: str) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(URL, schema=schema, max_size=20) as opened:
        yield opened


async def _collect(store: PostgresEventStore, count: int) -> list[RecordedEvent]:
    seen: list[RecordedEvent] = []
    async for record in store.subscribe():
        seen.append(record)
        if len(seen) == count:
            break
    return seen


def _assert_dense(records: Sequence[RecordedEvent], count: int) -> None:
    assert [r.position for r in records] == list(range(1, count + 1))
    versions: dict[str, int] = {}
    for record in records:  # each stream's versions appear in order in the log
        assert record.version == versions.get(record.stream_id, 0) + 1
        versions[record.stream_id] = record.version


async def test_append_then_read_round_trip(store: PostgresEventStore) -> None:
    events = [*_events(2), Event(type="blob.stored", source="/smoke", data=b"\x00\xff")]

    result = await store.append("order-1", events, expected_version=NO_STREAM)

    assert (result.version, result.position) == (3, 3)
    assert [r.event for r in await store.read_stream("order-1")] == events
    assert [(r.position, r.version) for r in await store.read_all()] == [(1, 1), (2, 2), (3, 3)]
    assert [r.event for r in await store.read_all(types=["blob.stored"])] == events[2:]


async def test_append_with_stale_expected_version_raises_conflict(
    store: PostgresEventStore,
) -> None:
    await store.append("order-1", _events(1))

    with pytest.raises(ConcurrencyConflict) as caught:
        await store.append("order-1", _events(1), expected_version=0)

    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert await store.head_position() == 1


async def test_racing_appends_to_a_new_stream_one_wins(store: PostgresEventStore) -> None:
    async def attempt() -> bool:
        try:
            await store.append("order-1", _events(1), expected_version=NO_STREAM)
        except ConcurrencyConflict:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt() for _ in range(8)))

    assert outcomes.count(True) == 1
    assert len(await store.read_all()) == 1


async def test_concurrent_appenders_get_dense_positions(store: PostgresEventStore) -> None:
    async def writer(w: int) -> int:
        for i in range(20):
            await store.append(f"stream-{w}", _events(1 + (w + i) % 3))
        return sum(1 + (w + i) % 3 for i in range(20))

    total = sum(await asyncio.gather(*(writer(w) for w in range(16))))

    _assert_dense(await store.read_all(), total)
    assert await store.head_position() == total


async def test_subscriber_sees_every_event_in_order_while_appending(
    store: PostgresEventStore,
) -> None:
    writers, appends, size = 8, 15, 2
    total = writers * appends * size
    subscriber = asyncio.create_task(_collect(store, total))

    async def writer(w: int) -> None:
        for _ in range(appends):
            await store.append(f"stream-{w}", _events(size))

    await asyncio.gather(*(writer(w) for w in range(writers)))
    async with asyncio.timeout(10):
        seen = await subscriber

    _assert_dense(seen, total)
    assert [r.event.id for r in seen] == [r.event.id for r in await store.read_all()]


async def test_subscriber_of_another_store_wakes_on_notify(
    store: PostgresEventStore, schema: str
) -> None:
    async with PostgresEventStore(URL, schema=schema) as other:
        other.poll_interval = 60.0  # only a NOTIFY can wake it in time
        subscriber = asyncio.create_task(_collect(other, 3))
        await asyncio.sleep(0.3)  # let it catch up and start waiting

        await store.append("order-1", _events(3))

        async with asyncio.timeout(5):
            assert [r.position for r in await subscriber] == [1, 2, 3]


async def test_listener_reconnects_after_its_connection_is_killed(
    store: PostgresEventStore, schema: str
) -> None:
    async with PostgresEventStore(URL, schema=schema) as other:
        other.poll_interval = 60.0
        subscriber = asyncio.create_task(_collect(other, 2))
        await store.append("order-1", _events(1))
        await asyncio.sleep(0.3)
        kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = {}"
        listen = sql.SQL("LISTEN {}").format(sql.Identifier(f"tidings_{schema}"))
        assert await _execute(sql.SQL(kill).format(sql.Literal(listen.as_string()))) == [(True,)]
        await asyncio.sleep(0.5)  # the listener reconnects after its first backoff (0.1 s)

        await store.append("order-1", _events(1))

        async with asyncio.timeout(5):
            assert [r.position for r in await subscriber] == [1, 2]


async def test_unsequenced_rows_of_a_dead_writer_are_positioned_by_a_poll(
    store: PostgresEventStore, schema: str
) -> None:
    # A writer that committed its rows and died before running the sequencer.
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as raw:
        await store._write(raw, [StreamAppend("order-1", _events(3))], None)
    assert await store.head_position() == 0

    async with PostgresEventStore(URL, schema=schema) as other:
        other.poll_interval = 0.1
        async with asyncio.timeout(5):
            seen = await _collect(other, 3)

    _assert_dense(seen, 3)
    assert (await store.verify()).ok


async def test_an_uncommitted_insert_does_not_delay_other_appends(
    store: PostgresEventStore,
) -> None:
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as raw:
        async with raw.transaction():  # held open while others append
            await store._write(raw, [StreamAppend("slow", _events(2))], None)
            async with asyncio.timeout(5):
                fast = await store.append("fast", _events(3))
            assert fast.position == 3
        after = await store.append("fast", _events(1))

    assert after.position == 6
    log = await store.read_all()
    assert [r.stream_id for r in log] == ["fast"] * 3 + ["slow"] * 2 + ["fast"]
    _assert_dense(log, 6)


async def test_verify_passes_with_unsequenced_rows_present(store: PostgresEventStore) -> None:
    await store.append("order-1", _events(2))
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as raw:
        await store._write(raw, [StreamAppend("order-1", _events(2))], None)

    report = await store.verify()

    assert report.ok, report.problem
    assert report.records == 2


async def test_checkpoint_moves_only_forward(store: PostgresEventStore) -> None:
    await store.append_many([StreamAppend("a", _events(1))], checkpoint=Checkpoint("proj", 5))

    with pytest.raises(CheckpointConflict) as caught:
        await store.append_many([StreamAppend("b", _events(1))], checkpoint=Checkpoint("proj", 5))

    assert (caught.value.stored, caught.value.given) == (5, 5)
    assert await store.checkpoint("proj") == 5
    assert [r.stream_id for r in await store.read_all()] == ["a"]


async def test_multi_stream_appends_in_opposite_orders_do_not_deadlock(
    store: PostgresEventStore,
) -> None:
    async def writer(names: tuple[str, str]) -> None:
        for i in range(15):
            pair = [StreamAppend(f"{name}-{i % 4}", _events(1)) for name in names]
            await store.append_many(pair)

    await asyncio.gather(*(writer(("a", "b") if w % 2 else ("b", "a")) for w in range(8)))

    _assert_dense(await store.read_all(), 8 * 15 * 2)


async def test_stores_opening_a_new_schema_at_once_all_succeed(schema: str) -> None:
    stores = [PostgresEventStore(URL, schema=schema) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].append("order-1", _events(1))
        assert await stores[3].head_position() == 1
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))


async def test_reads_survive_the_server_closing_pooled_connections(schema: str) -> None:
    async with PostgresEventStore(URL, schema=schema, min_size=4) as store:
        await asyncio.gather(*(store.append(f"order-{n}", _events(1)) for n in range(8)))
        # Concurrent reads check out several pooled connections (appends share one: group commit).
        await asyncio.gather(*(store.read_stream(f"order-{n}") for n in range(8)))
        kill = sql.SQL(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND query LIKE {}"
        ).format(sql.Literal(f"%{schema}%"))
        assert len(await _execute(kill)) >= 2
        await asyncio.sleep(0.2)

        heads = [await store.head_position() for _ in range(6)]
        result = await store.append("order-9", _events(1))

    assert heads == [8] * 6
    assert result.position == 9


async def test_subscription_raises_closed_error_after_aclose(store: PostgresEventStore) -> None:
    store.poll_interval = 0.05
    subscription = store.subscribe()
    waiting = asyncio.ensure_future(anext(subscription))
    await asyncio.sleep(0.2)

    await store.aclose()

    with pytest.raises(ClosedError):
        async with asyncio.timeout(5):
            await waiting
    await subscription.aclose()


async def test_unreachable_server_raises_backend_unavailable() -> None:
    store = PostgresEventStore("postgresql://postgres@127.0.0.1:1/test")
    store.connect_timeout = 0.5

    with pytest.raises(BackendUnavailableError) as caught:
        await store.open()

    assert isinstance(caught.value.__cause__, psycopg.Error)
    await store.aclose()


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@h:5/db", "postgres://u@h:5/db", "postgresql+psycopg://u@h:5/db"],
)
def test_url_schemes_are_accepted(url: str) -> None:
    assert conninfo_from_url(url) == "postgresql://u@h:5/db"


@pytest.mark.parametrize("schema", ["", "1abc", "a-b", 'x"; DROP', "a" * 56])
def test_invalid_schema_is_refused(schema: str) -> None:
    with pytest.raises(ConfigurationError):
        PostgresEventStore(URL, schema=schema)


async def test_concurrent_appends_share_commits(store: PostgresEventStore) -> None:
    commits = 0

    async def count() -> None:
        nonlocal commits
        commits += 1

    store.before_commit = count
    await asyncio.gather(*(store.append(f"grouped-{n}", _events(1)) for n in range(64)))
    assert await store.head_position() == 64
    assert commits < 64 / 4, f"64 appends took {commits} commits: no group commit"


async def test_a_conflict_in_a_group_fails_alone(store: PostgresEventStore) -> None:
    await store.append("taken", _events(1))
    results = await asyncio.gather(
        *(store.append(f"free-{n}", _events(1)) for n in range(20)),
        store.append("taken", _events(1), expected_version=0),
        return_exceptions=True,
    )
    assert [type(r) for r in results if isinstance(r, Exception)] == [ConcurrencyConflict]
    positions = sorted(r.position for r in results if not isinstance(r, Exception))
    assert positions == list(range(2, 22))


async def test_appends_to_one_stream_in_a_burst_keep_versions_in_order(
    store: PostgresEventStore,
) -> None:
    results = await asyncio.gather(*(store.append("busy", _events(1)) for _ in range(30)))
    assert sorted(r.version for r in results) == list(range(1, 31))
    records = await store.read_stream("busy")
    assert [r.version for r in records] == list(range(1, 31))
