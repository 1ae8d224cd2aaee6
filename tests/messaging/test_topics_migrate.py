"""Graduating a topic: `migrate_topic` from a SQLite broker to every backend, and the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from tests.conformance.broker_harness import harness
from typer.testing import CliRunner

from tidings.adapters.sqlite.broker import SQLiteBroker
from tidings.cli import app
from tidings.events import Event
from tidings.messaging.migrate import NotAnEvent, TopicMigrationError, migrate_topic
from tidings.messaging.ports import Broker, Delivery, dead_letter_topic, partition_for
from tidings.messaging.transfer import StoredMessage, TopicTransfer
from tidings.testing.conformance.broker import BrokerHarness, Consumer, make_events, topic_name

__all__ = ["harness"]

Decide = Callable[[Delivery], bool]
"""Whether to ack a delivery (else it is left unsettled)."""


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[SQLiteBroker]:
    """The SQLite broker topics graduate from."""
    async with SQLiteBroker(tmp_path / "source.db") as broker:
        yield broker


@pytest.fixture
async def destination(harness: BrokerHarness) -> Broker:
    """A broker of the backend under test (closed with its harness)."""
    return await harness.make_broker()


@pytest.fixture
def topic() -> str:
    """A topic no other test uses."""
    return topic_name("graduate")


def _keys_on_distinct_partitions(count: int, partitions: int) -> list[str]:
    """Return ``count`` keys, each on a partition of its own."""
    chosen: dict[int, str] = {}
    for n in range(100):
        chosen.setdefault(partition_for(f"key-{n}", partitions), f"key-{n}")
    return [chosen[p] for p in sorted(chosen)][:count]


async def _settle(broker: Broker, topic: str, group: str, count: int, decide: Decide) -> None:
    """Take ``count`` deliveries as a member of ``group``, ack those ``decide`` picks, leave."""
    async with Consumer(broker, topic, group=group, handler=_noop) as consumer:
        for delivery in await consumer.take(count):
            if decide(delivery):
                await delivery.ack()


async def _noop(delivery: Delivery) -> None:
    """Leave the delivery to the test."""


def _seen(delivery: Delivery) -> tuple[str | None, int]:
    data = delivery.event.data
    assert isinstance(data, dict)
    return delivery.key, data["n"]


async def _partition(broker: Broker, topic: str, partition: int) -> list[StoredMessage]:
    assert isinstance(broker, TopicTransfer)
    return await broker.read_partition(topic, partition, limit=10_000)


async def _contents(broker: Broker, topic: str, partitions: int) -> list[list[tuple[object, ...]]]:
    """Return each partition's (key, event) pairs in offset order."""
    return [
        [(m.key, m.event) for m in await _partition(broker, topic, p)] for p in range(partitions)
    ]


def _keyed(keys: list[str], count: int) -> list[Event]:
    """Return ``count`` events per key, interleaved, numbered per key in ``n``."""
    per_key = [make_events(count, key=key) for key in keys]
    return [events[n] for n in range(count) for events in per_key]


async def test_migrate_keeps_keys_order_per_key_and_partition_count(
    source: SQLiteBroker, destination: Broker, topic: str
) -> None:
    await source.create_topic(topic, partitions=3)
    events = _keyed(["a", "b", "c", "d"], 5)
    await source.publish(topic, events)
    report = await migrate_topic(source, destination, topic, batch=3)
    assert (report.copied, report.already_there, report.not_events) == (20, 0, ())
    assert isinstance(destination, TopicTransfer)
    described = await destination.describe_topic(topic)
    assert described is not None
    assert described.partitions == 3
    assert await _contents(destination, topic, 3) == await _contents(source, topic, 3)
    async with Consumer(destination, topic, group="fresh") as consumer:
        got = [_seen(d) for d in await consumer.take(20)]
    for key in "abcd":
        assert [n for k, n in got if k == key] == list(range(5))


async def test_migrate_moves_each_group_to_its_lowest_unsettled_offset(
    source: SQLiteBroker, destination: Broker, topic: str
) -> None:
    first, second = _keys_on_distinct_partitions(2, 2)
    await source.create_topic(topic, partitions=2)
    await source.publish(topic, _keyed([first, second], 6))
    # "resumes": on the first key acks 0, 1, leaves 2 in flight, acks 3 to 5; acks all of the
    # second. "behind": acks 0 to 3 of the first key and 0 of the second.
    await _settle(source, topic, "resumes", 12, lambda d: _seen(d) != (first, 2))
    await _settle(source, topic, "behind", 12, lambda d: _seen(d)[1] < (4 if d.key == first else 1))
    report = await migrate_topic(source, destination, topic)
    p1, p2 = partition_for(first, 2), partition_for(second, 2)
    assert report.topics[0].positions == {"resumes": {p1: 2, p2: 6}, "behind": {p1: 4, p2: 1}}
    async with Consumer(destination, topic, group="resumes") as consumer:
        # 3 to 5 were acked above the committed offset: delivered again (at-least-once)
        assert [_seen(d) for d in await consumer.take(4)] == [(first, n) for n in range(2, 6)]
        await consumer.expect_quiet()
    async with Consumer(destination, topic, group="behind") as consumer:
        got = [_seen(d) for d in await consumer.take(7)]
        await consumer.expect_quiet()
    assert [n for k, n in got if k == first] == [4, 5]
    assert [n for k, n in got if k == second] == [1, 2, 3, 4, 5]


async def test_migrate_copies_the_dead_letter_topic_only_when_asked(
    source: SQLiteBroker, destination: Broker, topic: str
) -> None:
    await source.create_topic(topic, partitions=2)
    events = make_events(3, key="k")
    await source.publish(topic, events)
    async with Consumer(source, topic, group="g", handler=_noop) as consumer:
        for delivery in await consumer.take(3):
            await (delivery.reject("bad") if _seen(delivery)[1] == 1 else delivery.ack())
    dlq = dead_letter_topic(topic)
    skipped = await migrate_topic(source, destination, topic, dead_letters=False)
    assert [t.topic for t in skipped.topics] == [topic]
    assert isinstance(destination, TopicTransfer)
    assert await destination.describe_topic(dlq) is None
    report = await migrate_topic(source, destination, topic)
    assert [(t.topic, t.copied) for t in report.topics] == [(topic, 0), (dlq, 1)]
    copied = [m.event for p in range(2) for m in await _partition(destination, dlq, p)]
    assert copied == [events[1]]


async def test_migrate_twice_stores_nothing_twice_and_keeps_positions(
    source: SQLiteBroker, destination: Broker, topic: str
) -> None:
    await source.create_topic(topic, partitions=1)
    await source.publish(topic, make_events(10, key="k"))
    await _settle(source, topic, "g", 10, lambda d: _seen(d)[1] < 4)
    first = await migrate_topic(source, destination, topic)
    await source.publish(topic, make_events(3, key="k", tag="later"))
    again = await migrate_topic(source, destination, topic)
    assert (first.copied, again.copied, again.already_there) == (10, 3, 10)
    assert await _contents(destination, topic, 1) == await _contents(source, topic, 1)
    assert again.topics[0].positions == {"g": {0: 4}}
    async with Consumer(destination, topic, group="g") as consumer:
        assert len(await consumer.take(9)) == 9
        await consumer.expect_quiet()


async def test_migrate_after_an_interruption_finishes_without_duplicates(
    source: SQLiteBroker, destination: Broker, topic: str
) -> None:
    await source.create_topic(topic, partitions=2)
    await source.publish(topic, _keyed(_keys_on_distinct_partitions(2, 2), 5))
    await _settle(source, topic, "g", 10, lambda d: _seen(d)[1] < 3)

    def interrupt(_: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await migrate_topic(source, destination, topic, batch=2, progress=interrupt)
    assert len(await _partition(destination, topic, 0)) == 2
    report = await migrate_topic(source, destination, topic, batch=2)
    assert (report.copied, report.already_there) == (8, 2)
    assert await _contents(destination, topic, 2) == await _contents(source, topic, 2)
    assert report.topics[0].positions == {"g": {0: 3, 1: 3}}


async def test_migrate_of_a_missing_topic_fails_clearly(
    source: SQLiteBroker, destination: Broker, topic: str
) -> None:
    with pytest.raises(TopicMigrationError, match=f"the source has no topic '{topic}'"):
        await migrate_topic(source, destination, topic)


async def test_migrate_refuses_a_destination_topic_with_another_partition_count(
    source: SQLiteBroker, destination: Broker, topic: str
) -> None:
    await source.create_topic(topic, partitions=3)
    await source.publish(topic, make_events(2, key="k"))
    await destination.create_topic(topic, partitions=2)
    with pytest.raises(TopicMigrationError, match="with 2 partitions, the source has 3"):
        await migrate_topic(source, destination, topic)


async def test_migrate_reports_payloads_that_are_not_events(
    source: SQLiteBroker, destination: Broker, topic: str
) -> None:
    await source.create_topic(topic, partitions=1)
    events = make_events(2, key="k")
    await source.publish(topic, events[:1])
    await source.publish_raw(topic, b"not an event")
    await source.publish(topic, events[1:])
    report = await migrate_topic(source, destination, topic)
    assert report.not_events == (NotAnEvent(topic, 0, 1, 12),)
    assert report.copied == 2
    assert [m.event for m in await _partition(destination, topic, 0)] == events


async def test_migrate_refuses_a_broker_that_cannot_transfer_topics(
    source: SQLiteBroker, topic: str
) -> None:
    await source.create_topic(topic, partitions=1)
    with pytest.raises(TopicMigrationError, match=r"does not implement .*TopicTransfer"):
        await migrate_topic(source, object(), topic)  # type: ignore[arg-type]


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def sqlite_topic(tmp_path: Path, topic: str) -> str:
    """The URL of a SQLite file holding ``topic``: 5 events on one partition, group g at 2."""

    async def fill() -> None:
        async with SQLiteBroker(tmp_path / "from.db") as broker:
            await broker.create_topic(topic, partitions=1)
            await broker.publish(topic, make_events(5, key="k"))
            await _settle(broker, topic, "g", 5, lambda d: _seen(d)[1] < 2)

    asyncio.run(fill())
    return f"sqlite:///{tmp_path / 'from.db'}"


def test_cli_migrate_copies_the_topic_and_its_groups(
    sqlite_topic: str, tmp_path: Path, topic: str
) -> None:
    target = f"sqlite:///{tmp_path / 'to.db'}"
    done = CliRunner().invoke(
        app, ["topics", "migrate", sqlite_topic, target, topic, "--batch", "2"]
    )
    assert done.exit_code == 0, done.output
    assert f"{topic}: 5 copied, 0 already there" in done.output
    assert "group g -> partition 0 at 2" in done.output
    described = CliRunner().invoke(app, ["topics", "describe", target, topic])
    assert described.exit_code == 0, described.output
    assert "1 partition(s)" in described.output
    assert "g: 0@2" in described.output


def test_cli_migrate_of_a_missing_topic_exits_with_the_reason(tmp_path: Path) -> None:
    source, target = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    done = CliRunner().invoke(app, ["topics", "migrate", source, target, "nothing-here"])
    assert done.exit_code == 1
    assert "the source has no topic 'nothing-here'" in done.output


def test_cli_migrate_exits_1_naming_payloads_that_are_not_events(
    tmp_path: Path, topic: str
) -> None:
    async def fill() -> None:
        async with SQLiteBroker(tmp_path / "raw.db") as broker:
            await broker.create_topic(topic, partitions=1)
            await broker.publish_raw(topic, b"junk")

    asyncio.run(fill())
    source, target = (f"sqlite:///{tmp_path / name}" for name in ("raw.db", "to.db"))
    done = CliRunner().invoke(app, ["topics", "migrate", source, target, topic])
    assert done.exit_code == 1
    assert f"1 message(s) are not events and were not copied: {topic} 0@0" in done.output
