"""What the conformance suite does not cover for `PostgresBroker`: URL options, errors from the
driver, offsets with concurrent publishers and late commits, idempotence across processes,
schemas kept apart, and the topic transfer methods.

The brokers run on the private cluster of the conformance harness (a fresh schema per test),
so a test may kill the server without touching the shared one on :5432.
"""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest
from tests.conformance.harness_postgres import PrivateCluster, private_cluster

from tidings.adapters.postgres.broker import PostgresBroker
from tidings.adapters.postgres.broker_options import parse_url
from tidings.adapters.postgres.broker_publish import Placed, write
from tidings.errors import BackendUnavailableError, ConfigurationError
from tidings.events import Event
from tidings.messaging.ports import Delivery, partition_for
from tidings.urls import resolve

pytestmark = pytest.mark.postgres

Opener = Callable[..., Awaitable[PostgresBroker]]


def _events(count: int, key: str = "k") -> list[Event]:
    return [Event(type="t.e", source="/t", data={"n": n}, partitionkey=key) for n in range(count)]


@pytest.fixture
def cluster() -> PrivateCluster:
    return private_cluster()


@pytest.fixture
async def schema(cluster: PrivateCluster) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex}"
    yield name
    async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def open_broker(cluster: PrivateCluster, schema: str) -> AsyncIterator[Opener]:
    made: list[PostgresBroker] = []

    async def opener(**options: object) -> PostgresBroker:
        broker = PostgresBroker(cluster.url, schema=schema, **options)  # type: ignore[arg-type]
        made.append(broker)
        return await broker.open()

    yield opener
    for broker in made:
        await broker.aclose()


async def _take(broker: PostgresBroker, topic: str, count: int, group: str) -> list[Delivery]:
    out: list[Delivery] = []
    async with broker.subscribe(topic, group=group) as subscription:
        async with asyncio.timeout(15):
            async for delivery in subscription:
                out.append(delivery)
                await delivery.ack()
                if len(out) == count:
                    break
    return out


# -- options --------------------------------------------------------------------------------


def test_url_options_are_parsed_and_the_rest_goes_to_libpq() -> None:
    url = "postgresql://u@db:5433/app?schema=events&await_acks=yes&max_size=4&sslmode=disable"
    conninfo, options = parse_url(url, {})
    assert conninfo == "postgresql://u@db:5433/app?sslmode=disable"
    assert (options.schema, options.await_acks, options.max_size) == ("events", True, 4)


def test_keyword_options_win_over_the_url() -> None:
    broker = PostgresBroker("postgres://h/db?schema=a&poll_interval=2", schema="b")
    assert (broker.schema, broker.options.poll_interval) == ("b", 2.0)


@pytest.mark.parametrize(
    "query", ["schema=no-dashes", "await_acks=maybe", "max_size=lots", "min_size=5&max_size=2"]
)
def test_a_bad_option_raises_configuration_error(query: str) -> None:
    with pytest.raises(ConfigurationError):
        PostgresBroker(f"postgresql://h/db?{query}")


def test_the_url_table_serves_postgresql_urls_with_this_broker() -> None:
    assert resolve("broker", "postgresql://127.0.0.1/test?schema=x") is PostgresBroker


# -- errors -----------------------------------------------------------------------------------


async def test_an_unreachable_server_raises_backend_unavailable() -> None:
    with socket.socket() as probe:  # a local port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    broker = PostgresBroker(f"postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=1")
    with pytest.raises(BackendUnavailableError):
        await broker.open()
    await broker.aclose()


async def test_publish_while_the_server_is_down_raises_then_works_again(
    open_broker: Opener, cluster: PrivateCluster
) -> None:
    broker = await open_broker()
    await broker.publish("t", _events(1))
    await asyncio.to_thread(cluster.kill)
    try:
        with pytest.raises(BackendUnavailableError):
            await broker.publish("t", _events(1))
    finally:
        await asyncio.to_thread(cluster.start)
    results = await broker.publish("t", _events(1))
    assert results[0].offset == 1


# -- offsets and idempotence with concurrent publishers -----------------------------------------


async def test_concurrent_publishers_get_dense_offsets_in_order(open_broker: Opener) -> None:
    brokers = [await open_broker() for _ in range(3)]
    await brokers[0].create_topic("t", partitions=1)

    async def publish(index: int) -> list[int]:
        broker = brokers[index % 3]
        results = await broker.publish("t", _events(5, key=f"k{index}"))
        return [r.offset for r in results]

    batches = await asyncio.gather(*(publish(i) for i in range(40)))
    assert sorted(o for batch in batches for o in batch) == list(range(200))
    assert all(batch == list(range(batch[0], batch[0] + 5)) for batch in batches)


async def test_a_late_commit_is_never_skipped_by_a_consumer(
    open_broker: Opener, cluster: PrivateCluster, schema: str
) -> None:
    early, late = await open_broker(), await open_broker()
    await early.create_topic("t", partitions=1)
    await early.publish("t", _events(1))
    slow = _events(1)[0]
    async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
        async with conn.transaction():  # a publisher that holds its commit back
            placed = [Placed(early._topics["t"].topic_id, 0, early._outgoing(slow, None))]
            await write(conn, early._sql, placed, "unused")
            behind = asyncio.create_task(late.publish("t", _events(1)))
            first = await _take(early, "t", 1, "g")
            await asyncio.sleep(0.3)
            assert not behind.done(), "a publish overtook an uncommitted one"
        assert (await behind)[0].offset == 2
    rest = await _take(early, "t", 2, "g")
    assert [d.offset for d in first + rest] == [0, 1, 2]
    assert rest[0].event.id == slow.id


async def test_a_rolled_back_publish_leaves_no_hole(
    open_broker: Opener, cluster: PrivateCluster
) -> None:
    broker = await open_broker()
    await broker.create_topic("t", partitions=1)
    connect = psycopg.AsyncConnection.connect(cluster.url, autocommit=True)
    async with await connect as conn, conn.transaction(force_rollback=True):
        message = broker._outgoing(_events(1)[0], None)
        await write(conn, broker._sql, [Placed(broker._topics["t"].topic_id, 0, message)], "x")
    results = await broker.publish("t", _events(2))
    assert [r.offset for r in results] == [0, 1]


async def test_one_event_published_by_two_brokers_at_once_is_stored_once(
    open_broker: Opener,
) -> None:
    first, second = await open_broker(), await open_broker()
    event = _events(1)[0]
    results = await asyncio.gather(first.publish("t", [event]), second.publish("t", [event]))
    stored = [r[0] for r in results]
    assert sorted(r.duplicate for r in stored) == [False, True]
    assert stored[0].offset == stored[1].offset
    assert len(await _take(first, "t", 1, "g")) == 1


async def test_schemas_keep_brokers_apart(cluster: PrivateCluster, open_broker: Opener) -> None:
    mine = await open_broker()
    other_schema = f"t_{uuid.uuid4().hex}"
    other = await PostgresBroker(cluster.url, schema=other_schema).open()
    try:
        await mine.publish("t", _events(1))
        assert await other.describe_topic("t") is None
    finally:
        await other.aclose()
        async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{other_schema}" CASCADE')


async def test_acks_that_must_be_awaited_are_committed_on_return(
    open_broker: Opener, cluster: PrivateCluster, schema: str
) -> None:
    broker = await open_broker(await_acks=True)
    await broker.publish("t", _events(1))
    await _take(broker, "t", 1, "g")
    async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
        cursor = await conn.execute(f'SELECT COUNT(*) FROM "{schema}".tidings_broker_pending')
        assert await cursor.fetchone() == (0,)


# -- topic transfer -------------------------------------------------------------------------


async def test_describe_topic_of_a_missing_topic_is_none(open_broker: Opener) -> None:
    broker = await open_broker()
    assert await broker.describe_topic("missing") is None


async def test_read_partition_returns_events_and_raw_payloads_in_order(
    open_broker: Opener,
) -> None:
    broker = await open_broker()
    await broker.create_topic("t", partitions=1)
    events = _events(2)
    await broker.publish("t", events[:1])
    await broker.publish_raw("t", b"not an event")
    await broker.publish("t", events[1:])
    stored = await broker.read_partition("t", 0, from_offset=1)
    assert [(m.offset, m.event is None) for m in stored] == [(1, True), (2, False)]
    assert stored[0].payload == b"not an event"
    assert stored[1].event is not None
    assert stored[1].event.id == events[1].id


async def test_append_to_partition_ignores_keys_and_is_idempotent(open_broker: Opener) -> None:
    broker = await open_broker()
    await broker.create_topic("t", partitions=4)
    key = "k"
    target = (partition_for(key, 4) + 1) % 4
    pairs = [(event, key) for event in _events(3)]
    first = await broker.append_to_partition("t", target, pairs)
    again = await broker.append_to_partition("t", target, pairs)
    assert [(r.partition, r.offset) for r in first] == [(target, 0), (target, 1), (target, 2)]
    assert all(r.duplicate for r in again)
    with pytest.raises(ValueError, match="no partition"):
        await broker.append_to_partition("t", 4, pairs)


async def test_group_positions_are_the_lowest_unsettled_offsets(open_broker: Opener) -> None:
    broker = await open_broker()
    await broker.create_topic("t", partitions=1)
    await broker.publish("t", _events(3))
    async with broker.subscribe("t", group="g") as subscription:
        first = await anext(subscription)
        second = await anext(subscription)
        await second.ack()
        await broker._settlements.drain()
        assert await broker.group_positions("t") == {"g": {0: first.offset}}
        await first.ack()
    assert await broker.group_positions("t") == {"g": {0: 2}}  # the third was never acked


async def test_consumers_see_every_commit_in_order_despite_rollbacks_and_slow_commits(
    open_broker: Opener, cluster: PrivateCluster
) -> None:
    """Many writers, some rolling back and some slow to commit, while a group reads."""
    brokers = [await open_broker() for _ in range(3)]
    await brokers[0].create_topic("t", partitions=2)
    committed: set[str] = set()
    seen: list[Delivery] = []
    rng = random.Random(7)

    async def held_back(
        conn: psycopg.AsyncConnection[tuple[object, ...]], broker: PostgresBroker
    ) -> None:
        events = _events(rng.randint(1, 3), key=f"k{rng.randint(0, 3)}")
        row = await broker._topic_row("t")
        placed = [
            Placed(
                row.topic_id, partition_for(e.partitionkey, 2), broker._outgoing(e, e.partitionkey)
            )
            for e in events
        ]
        keep = rng.random() < 0.5
        async with conn.transaction(force_rollback=not keep):
            await write(conn, broker._sql, placed, broker._channel)
            await asyncio.sleep(rng.random() * 0.05)  # a slow commit (or a rollback)
        if keep:
            committed.update(e.id for e in events)

    async def writer(index: int) -> None:
        broker = brokers[index % 3]
        async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
            for _ in range(15):
                if rng.random() < 0.5:
                    events = _events(rng.randint(1, 4), key=f"k{rng.randint(0, 3)}")
                    await broker.publish("t", events)
                    committed.update(e.id for e in events)
                else:
                    await held_back(conn, broker)

    async def read() -> None:
        async with brokers[1].subscribe("t", group="g") as subscription:
            async for delivery in subscription:
                seen.append(delivery)
                await delivery.ack()

    reader = asyncio.create_task(read())
    await asyncio.gather(*(writer(i) for i in range(6)))
    async with asyncio.timeout(15):
        while {d.event.id for d in seen} != committed:  # noqa: ASYNC110 - the reader fills it
            await asyncio.sleep(0.05)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    assert len(seen) == len(committed)  # nothing twice, nothing extra
    for partition in (0, 1):
        offsets = [d.offset for d in seen if d.partition == partition]
        assert offsets == list(range(len(offsets)))  # dense, in order, none skipped
