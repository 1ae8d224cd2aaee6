"""Redis-only behaviour of `RedisBroker`: what the shared broker suite cannot see.

URL options, the AOF warning, errors translated at the boundary, the layout on the server
(dense stream ids, consumer groups, the id table that retention shrinks), what leaving does to
the consumer group, acks that wait, and cancellation that redis-py would swallow. Most cases use
the private redis-server of ``tests.conformance.harness_redis`` (AOF on); the AOF warning case
uses the shared server on 127.0.0.1:6379, which keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import uuid
import warnings
from collections.abc import AsyncIterator

import pytest
from tests.conformance.harness_redis import private_redis

from tidings.adapters.redis.broker import RedisBroker
from tidings.adapters.redis.broker_durability import RedisDurabilityWarning
from tidings.adapters.redis.broker_options import parse_url
from tidings.errors import BackendUnavailableError, ConfigurationError
from tidings.events import Event
from tidings.messaging import open_broker
from tidings.messaging.ports import Retention

pytestmark = pytest.mark.redis

SHARED_URL = "redis://127.0.0.1:6379/0"


def _topic() -> str:
    return f"redis-test.{uuid.uuid4().hex[:10]}"


def _events(count: int, *, key: str = "k") -> list[Event]:
    return [Event(type="t", source="/test", data={"i": i}, partitionkey=key) for i in range(count)]


@pytest.fixture
async def broker() -> AsyncIterator[RedisBroker]:
    async with RedisBroker(private_redis().url) as opened:
        yield opened


# -- options ------------------------------------------------------------------------------------


def test_url_options_are_parsed_and_the_rest_goes_to_redis_py() -> None:
    url = "redis://:pw@h:1/2?prefix=orders&aof_warning=no&await_acks=1&socket_timeout=3"
    driver_url, options = parse_url(url, {})
    assert driver_url == "redis://:pw@h:1/2?socket_timeout=3"
    assert (options.prefix, options.aof_warning, options.await_acks) == ("orders", False, True)


def test_keyword_options_win_over_the_url() -> None:
    _, options = parse_url("redis://h?prefix=a&retention_interval=5", {"prefix": "b"})
    assert (options.prefix, options.retention_interval) == ("b", 5.0)


@pytest.mark.parametrize(
    "url",
    [
        "nats://h:4222",
        "redis://h?prefix=has:colon",
        "redis://h?aof_warning=maybe",
        "redis://h?retention_interval=0",
        "redis://h?retention_interval=soon",
    ],
)
def test_bad_urls_raise_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisBroker(url)


def test_open_broker_resolves_redis_urls_to_the_redis_broker() -> None:
    assert isinstance(open_broker("redis://127.0.0.1:6379/0"), RedisBroker)


# -- errors and warnings ------------------------------------------------------------------------


async def test_an_unreachable_server_raises_backend_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        broker = RedisBroker(f"redis://127.0.0.1:{port}/0?connect_timeout=1")
        with pytest.raises(BackendUnavailableError):
            await broker.open()


async def test_a_server_without_aof_warns_once_on_open() -> None:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 6379), 1):
        broker = RedisBroker(SHARED_URL)
        with pytest.warns(RedisDurabilityWarning, match="appendonly no"):
            await broker.open()
        await broker.aclose()
        return
    pytest.skip("the shared Redis is not running on 127.0.0.1:6379")


async def test_a_server_with_aof_gives_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with RedisBroker(private_redis().url):
            pass


# -- the layout on the server -------------------------------------------------------------------


async def test_offsets_are_the_stream_ids_of_one_stream_per_partition(broker: RedisBroker) -> None:
    topic = _topic()
    await broker.create_topic(topic, partitions=2)
    results = await broker.publish(topic, _events(3))
    partition = results[0].partition
    entries = await broker.client.xrange(f"tidings:t:{topic}:{partition}")
    assert [entry_id for entry_id, _ in entries] == [b"0-1", b"0-2", b"0-3"]
    assert [r.offset for r in results] == [0, 1, 2]


async def test_retention_forgets_the_ids_of_the_events_it_removes(broker: RedisBroker) -> None:
    topic = _topic()
    await broker.create_topic(topic, partitions=1, retention=Retention(max_count=2))
    events = _events(5)
    await broker.publish(topic, events)
    assert await broker.enforce_retention() >= 3
    assert await broker.client.hlen(f"tidings:ids:{topic}") == 2
    again = await broker.publish(topic, [events[0], events[4]])
    assert [r.duplicate for r in again] == [False, True]


async def test_a_member_that_leaves_is_deleted_from_the_consumer_group(
    broker: RedisBroker,
) -> None:
    topic = _topic()
    await broker.create_topic(topic, partitions=1)
    await broker.publish(topic, _events(2))
    subscription = broker.subscribe(topic, group="g", ack_deadline=30)
    first = await anext(subscription)
    await first.ack()
    await anext(subscription)  # left unsettled
    await subscription.aclose()
    consumers = await broker.client.xinfo_consumers(f"tidings:t:{topic}:0", "g")
    assert [(c["name"], c["pending"]) for c in consumers] == [(b"tidings", 1)]


async def test_await_acks_applies_the_ack_before_returning() -> None:
    async with RedisBroker(private_redis().url, await_acks=True) as broker:
        topic = _topic()
        await broker.publish(topic, _events(1))
        subscription = broker.subscribe(topic, group="g")
        await (await anext(subscription)).ack()
        pending = await broker.client.xpending(f"tidings:t:{topic}:{_partition(topic)}", "g")
        assert pending["pending"] == 0
        await subscription.aclose()


def _partition(topic: str) -> int:
    from tidings.messaging.ports import partition_for

    return partition_for("k", 4)


# -- cancellation -------------------------------------------------------------------------------


async def test_a_cancelled_consumer_stops_even_mid_command(broker: RedisBroker) -> None:
    # redis-py can swallow a cancellation that lands while a command waits for its reply.
    topic = _topic()
    await broker.publish(topic, _events(1))

    async def publish_for_ever() -> None:
        while True:
            await broker.publish(topic, _events(1))

    rng = random.Random(topic)
    for _ in range(30):
        task = asyncio.create_task(publish_for_ever())
        await asyncio.sleep(rng.random() / 500)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert done, "the cancelled task kept running"
