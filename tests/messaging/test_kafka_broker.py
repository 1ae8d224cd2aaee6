"""Kafka-only behaviour of `KafkaBroker`: what the shared broker suite cannot see.

URL options, error translation, the per-partition watermark that group commits follow, the
delivery ledger, and Tansu's quirks worked around (the high watermark, the retention record).
The tests that talk to a server use the shared Tansu on 127.0.0.1:9092 (``scripts/services``)
and are skipped without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tidings.adapters.kafka import KafkaBroker
from tidings.adapters.kafka.codec import headers_of, read_headers
from tidings.adapters.kafka.member import ledger_group
from tidings.adapters.kafka.options import parse_url
from tidings.adapters.kafka.partitions import Entry, PartitionState
from tidings.errors import BackendUnavailableError, ConfigurationError
from tidings.events import Event
from tidings.messaging import open_broker
from tidings.messaging.ports import Delivery, Retention, StartFrom
from tidings.messaging.subscription import Outgoing

URL = "kafka://127.0.0.1:9092?session_timeout=6&commit_interval=0.02"


def _reachable() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 9092), 1):
        return True
    return False


needs_kafka = pytest.mark.skipif(not _reachable(), reason="Kafka is not running on :9092")


def _topic() -> str:
    return f"kafka-test-{uuid.uuid4().hex[:12]}"


def _events(count: int, key: str = "k") -> list[Event]:
    return [Event(type="t.e", source="/t", data={"n": n}, partitionkey=key) for n in range(count)]


@pytest.fixture
async def broker() -> AsyncIterator[KafkaBroker]:
    async with KafkaBroker(URL) as opened:
        yield opened


# -- options ----------------------------------------------------------------------------------


def test_url_options_are_parsed_and_keywords_win() -> None:
    servers, options = parse_url(
        "kafka://h1:9092,h2:9093?session_timeout=7.5&dedup_window=10&client_id=me",
        {"dedup_window": 20, "linger": None},
    )
    assert servers == "h1:9092,h2:9093"
    assert (options.session_timeout, options.dedup_window, options.client_id) == (7.5, 20, "me")
    assert options.linger == 0.002


@pytest.mark.parametrize(
    "url",
    [
        "kafka://h:9092?nope=1",
        "kafka://h:9092?session_timeout=soon",
        "kafka://h:9092?session_timeout=0.1",
        "kafka://h:9092?commit_interval=0",
        "kafka://user:secret@h:9092",
        "nats://h:4222",
    ],
)
def test_bad_urls_raise_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_url(url, {})


def test_the_url_table_opens_a_kafka_broker() -> None:
    assert isinstance(open_broker("kafka://127.0.0.1:9092"), KafkaBroker)


# -- pieces -----------------------------------------------------------------------------------


def test_headers_carry_the_id_and_flags_but_show_only_the_messages_own() -> None:
    outgoing = Outgoing("id-1", "k", b"x", 2, {"tidings-dlq-reason": "r"})
    raw = list(headers_of(outgoing).items())
    assert dict(raw)["tidings-id"] == b"id-1"
    assert read_headers(raw) == (2, {"tidings-dlq-reason": "r"})
    assert read_headers([("tidings-id", b"x")]) == (0, None)


def _state(offsets: range) -> PartitionState:
    state = PartitionState(0, epoch=1)
    for offset in offsets:
        state.add(Entry(offset, None, b"", 0, None))
    return state


def test_the_watermark_never_passes_an_unsettled_offset() -> None:
    state = _state(range(10, 15))
    taken = list(state.take_visible(0.0, 5))
    for entry in taken:
        state.hold(entry, lease=1, deadline=60.0)
    for entry in taken[1:]:
        state.settle(entry)  # everything but offset 10 is done
    assert state.watermark() == 10
    state.settle(taken[0])
    assert state.watermark() == 15


def test_an_entry_below_the_ledger_counts_an_earlier_delivery() -> None:
    state = PartitionState.at(0, 1, prior=2)
    state.add(Entry(1, None, b"", 0, None))
    state.add(Entry(2, None, b"", 0, None))
    first, second = state.take_visible(0.0, 2)
    state.hold(first, lease=1, deadline=1.0)
    state.hold(second, lease=1, deadline=1.0)
    assert (first.attempt, second.attempt) == (2, 1)


def test_a_stale_lease_settles_nothing() -> None:
    state = _state(range(1))
    (entry,) = state.take_visible(0.0, 1)
    state.hold(entry, lease=7, deadline=1.0)
    state.expire(2.0)
    assert state.holding(0, 7) is None
    assert state.watermark() == 0


# -- against the server -----------------------------------------------------------------------


@pytest.mark.kafka
async def test_an_unreachable_server_raises_backend_unavailable() -> None:
    async with KafkaBroker("kafka://127.0.0.1:1?request_timeout=1") as broker:
        with pytest.raises(BackendUnavailableError):
            await broker.publish(_topic(), _events(1))


@needs_kafka
@pytest.mark.kafka
async def test_the_committed_offset_stays_at_the_lowest_unsettled_event(
    broker: KafkaBroker,
) -> None:
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:8]}"
    await broker.create_topic(topic, partitions=1)
    await broker.publish(topic, _events(5))
    seen: list[Delivery] = []
    async with broker.subscribe(topic, group=group) as subscription:
        async for delivery in subscription:
            seen.append(delivery)
            if delivery.offset != 1:  # offset 1 stays unsettled, handled concurrently
                await delivery.ack()
            if len(seen) == 5:
                break
        await _eventually(lambda: _positions(broker, topic, group), {0: 1})
    assert await broker.group_positions(topic) == {group: {0: 1}}


@needs_kafka
@pytest.mark.kafka
async def test_the_delivery_ledger_runs_ahead_and_is_exact_once_the_member_leaves(
    broker: KafkaBroker,
) -> None:
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:8]}"
    await broker.create_topic(topic, partitions=1)
    await broker.publish(topic, _events(3))
    async with broker.subscribe(topic, group=group, prefetch=2) as subscription:
        await anext(subscription)  # the claim took two; the second was never yielded
        ahead = await broker._admin.group_offsets(ledger_group(group), topic, 1)
    exact = await broker._admin.group_offsets(ledger_group(group), topic, 1)
    assert ahead[0] >= 2
    assert exact == {0: 1}


@needs_kafka
@pytest.mark.kafka
async def test_start_latest_skips_a_whole_last_batch_despite_tansus_high_watermark(
    broker: KafkaBroker,
) -> None:
    topic = _topic()
    await broker.create_topic(topic, partitions=1)
    await broker.publish(topic, _events(5))  # one batch: Tansu reports its end as offset 1
    subscription = broker.subscribe(topic, group="late", start=StartFrom.LATEST)
    async with subscription:
        await broker.publish(topic, [Event(type="t.new", source="/t", partitionkey="k")])
        delivery = await asyncio.wait_for(anext(subscription), 15)
    assert (delivery.offset, delivery.event.type) == (5, "t.new")


@needs_kafka
@pytest.mark.kafka
async def test_retention_is_recorded_and_read_back_by_another_broker(broker: KafkaBroker) -> None:
    topic, retention = _topic(), Retention(max_age=timedelta(minutes=5), max_count=10)
    created = await broker.create_topic(topic, partitions=2, retention=retention)
    async with KafkaBroker(URL) as other:
        described = await other.describe_topic(topic)
    assert created.retention == retention
    assert described == created


async def _positions(broker: KafkaBroker, topic: str, group: str) -> dict[int, int]:
    return dict((await broker.group_positions(topic)).get(group, {}))


async def _eventually(read: object, expected: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while await read() != expected:  # type: ignore[operator]  # noqa: ASYNC110 - polls a server
            await asyncio.sleep(0.05)


@needs_kafka
@pytest.mark.kafka
async def test_replay_does_not_go_below_the_retention_floor(broker: KafkaBroker) -> None:
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:8]}"
    await broker.create_topic(topic, partitions=1, retention=Retention(max_count=2))
    await broker.publish(topic, _events(5))
    assert await broker.enforce_retention() == 3
    await broker.replay(topic, group=group, offsets={0: 0})
    assert await broker.group_positions(topic) == {group: {0: 3}}
    assert [m.offset for m in await broker.read_partition(topic, 0)] == [3, 4]


@needs_kafka
@pytest.mark.kafka
async def test_a_member_that_stops_fetching_while_full_loses_no_event(broker: KafkaBroker) -> None:
    """While the member's buffer is full its poller must not consume messages it then drops."""
    topic, group, count = _topic(), f"g-{uuid.uuid4().hex[:8]}", 3000
    await broker.create_topic(topic, partitions=1)
    for start in range(0, count, 1000):
        await broker.publish(topic, _events(1000, key=f"k{start}"))
    offsets: set[int] = set()
    async with broker.subscribe(topic, group=group, prefetch=1) as subscription:
        first = await asyncio.wait_for(anext(subscription), 30)
        await asyncio.sleep(2.5)  # the poller fetches past its high water mark, waits, pauses
        await first.ack()
        offsets.add(first.offset)
        async with asyncio.timeout(30):  # a dropped message: the loop would wait forever
            async for delivery in subscription:
                await delivery.ack()
                offsets.add(delivery.offset)
                if len(offsets) == count:
                    break
    assert offsets == set(range(count))
