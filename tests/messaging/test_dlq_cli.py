"""The dead-letter workbench: the port-based store on the memory broker, the CLI on SQLite."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidings import Event
from tidings.adapters.memory.broker import MemoryBroker
from tidings.cli import app as cli
from tidings.messaging import Broker, Delivery
from tidings.messaging.dlq import (
    AUDIT_TOPIC,
    REQUEUED_FROM,
    DeadLetter,
    DeadLetterStore,
    PortDeadLetters,
    dead_letters,
)
from tidings.messaging.router import connected

runner = CliRunner()


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    async with MemoryBroker() as opened:
        yield opened


@pytest.fixture
def topic() -> str:
    return f"orders-{uuid.uuid4().hex[:8]}"


def orders(count: int) -> list[Event]:
    return [
        Event(type="order.placed", source="/shop", data={"n": n}, partitionkey=f"o-{n}")
        for n in range(count)
    ]


async def reject_all(broker: Broker, topic: str, events: Sequence[Event]) -> None:
    """Publish events and have a group reject each with a reason naming it."""
    await broker.publish(topic, events)
    async with broker.subscribe(topic, group="shipping") as subscription:
        for _ in events:
            delivery = await asyncio.wait_for(anext(subscription), 2.0)
            await delivery.reject(f"ValueError: bad order {delivery.event.data}")


async def read(broker: Broker, topic: str, group: str = "inspect") -> list[Delivery]:
    got: list[Delivery] = []
    async with broker.subscribe(topic, group=group) as subscription:
        while True:
            try:
                delivery = await asyncio.wait_for(anext(subscription), 0.2)
            except TimeoutError:
                return got
            await delivery.ack()
            got.append(delivery)


def ids(entries: Sequence[DeadLetter]) -> list[str]:
    return [entry.event.id for entry in entries]


async def test_list_shows_each_entry_with_its_reason_and_leaves_the_queue_unchanged(
    broker: MemoryBroker, topic: str
) -> None:
    events = orders(3)
    await reject_all(broker, topic, events)
    store = dead_letters(broker, idle=0.1)
    first = await store.list(topic)
    assert sorted(ids(first)) == sorted(e.id for e in events)
    assert {e.topic for e in first} == {topic}
    assert {e.attempts for e in first} == {1}
    assert all(e.reason == f"ValueError: bad order {e.event.data}" for e in first)
    assert ids(await store.list(topic)) == ids(first)
    assert len(await store.list(f"{topic}.dlq", limit=2)) == 2


async def test_show_finds_one_entry_by_event_id(broker: MemoryBroker, topic: str) -> None:
    events = orders(2)
    await reject_all(broker, topic, events)
    store = dead_letters(broker, idle=0.1)
    shown = await store.show(topic, events[1].id)
    assert shown is not None
    assert shown.event == events[1]
    assert await store.show(topic, "no-such-id") is None


async def test_requeue_republishes_a_copy_records_it_and_removes_the_entry(
    broker: MemoryBroker, topic: str
) -> None:
    events = orders(2)
    await reject_all(broker, topic, events)
    store = dead_letters(broker, idle=0.1)
    [done] = await store.requeue(topic, [events[0].id], actor="ada@desk")
    assert done.event.id == events[0].id
    assert ids(await store.list(topic)) == [events[1].id]
    [copy] = await read(broker, topic, group="shipping")  # the failing group gets it again
    assert copy.event.extension(REQUEUED_FROM) == events[0].id
    assert copy.event.id != events[0].id
    assert (copy.event.data, copy.key) == (events[0].data, "o-0")
    [audit] = await read(broker, AUDIT_TOPIC)
    assert audit.event.type == "tidings.dlq.requeued"
    assert isinstance(audit.event.data, dict)
    assert audit.event.data["actor"] == "ada@desk"
    assert audit.event.data["event_id"] == events[0].id
    assert audit.event.data["requeued_as"] == copy.event.id
    assert audit.event.time is not None


async def test_a_requeue_run_again_after_a_crash_publishes_no_second_copy(
    broker: MemoryBroker, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [event] = orders(1)
    await reject_all(broker, topic, [event])
    store = PortDeadLetters(broker, idle=0.1)

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the workbench died after republishing")

    with monkeypatch.context() as patched:
        patched.setattr(store, "_audit", crash)
        with pytest.raises(RuntimeError):
            await store.requeue(topic, None, actor="ada")
    assert ids(await store.list(topic)) == [event.id]  # not acked: still queued
    assert len(await store.requeue(topic, None, actor="ada")) == 1
    assert len(await read(broker, topic, group="shipping")) == 1


async def test_requeue_after_a_delay_waits_before_republishing(
    broker: MemoryBroker, topic: str
) -> None:
    await reject_all(broker, topic, orders(1))
    started = time.monotonic()
    await dead_letters(broker, idle=0.05).requeue(topic, None, actor="ada", delay=0.3)
    assert time.monotonic() - started >= 0.3


async def test_purge_removes_every_entry_and_records_each(broker: MemoryBroker, topic: str) -> None:
    events = orders(3)
    await reject_all(broker, topic, events)
    store = dead_letters(broker, idle=0.1)
    purged = await store.purge(topic, None, actor="ada")
    assert sorted(ids(purged)) == sorted(e.id for e in events)
    assert await store.list(topic) == []
    audits = await read(broker, AUDIT_TOPIC)
    assert [a.event.type for a in audits] == ["tidings.dlq.purged"] * 3
    assert await read(broker, topic, group="shipping") == []


def test_a_broker_with_its_own_dead_letter_store_is_used_as_it_is() -> None:
    class Native(MemoryBroker):
        async def list(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
            return []

        async def show(self, topic: str, event_id: str) -> DeadLetter | None:
            return None

        async def requeue(self, *args: object, **kwargs: object) -> list[DeadLetter]:
            return []

        async def purge(self, *args: object, **kwargs: object) -> list[DeadLetter]:
            return []

    native = Native()
    assert isinstance(native, DeadLetterStore)
    assert dead_letters(native) is native
    assert isinstance(dead_letters(MemoryBroker()), PortDeadLetters)


# -- the command line, on SQLite (each command is its own process's worth of broker) ---------


@pytest.fixture
def sqlite_dlq(tmp_path: Path, topic: str) -> tuple[str, list[Event]]:
    url, events = f"sqlite:///{tmp_path / 'broker.db'}", orders(3)

    async def fill() -> None:
        async with connected(url) as broker:
            await reject_all(broker, topic, events)

    asyncio.run(fill())
    return url, events


def test_cli_list_and_show_print_the_entries_and_why_they_failed(
    sqlite_dlq: tuple[str, list[Event]], topic: str
) -> None:
    url, events = sqlite_dlq
    listed = runner.invoke(cli, ["dlq", "list", topic, "--url", url])
    assert listed.exit_code == 0, listed.output
    assert all(e.id in listed.output for e in events)
    assert "bad order" in listed.output
    shown = runner.invoke(cli, ["dlq", "show", topic, events[2].id, "--url", url])
    assert shown.exit_code == 0, shown.output
    assert "ValueError: bad order {'n': 2}" in shown.output
    assert '"partitionkey": "o-2"' in shown.output


def test_cli_requeue_then_purge_empty_the_queue(
    sqlite_dlq: tuple[str, list[Event]], topic: str
) -> None:
    url, events = sqlite_dlq
    requeued = runner.invoke(cli, ["dlq", "requeue", topic, events[0].id, "--url", url])
    assert requeued.exit_code == 0, requeued.output
    assert "1 requeued" in requeued.output
    purged = runner.invoke(cli, ["dlq", "purge", topic, "--all", "--url", url, "--actor", "ci"])
    assert purged.exit_code == 0, purged.output
    assert "2 purged" in purged.output
    listed = runner.invoke(cli, ["dlq", "list", topic, "--url", url])
    assert not any(e.id in listed.output for e in events)


def test_cli_requeue_exits_1_for_an_unknown_id(
    sqlite_dlq: tuple[str, list[Event]], topic: str
) -> None:
    url, _ = sqlite_dlq
    result = runner.invoke(cli, ["dlq", "requeue", topic, "nope", "--url", url])
    assert result.exit_code == 1
    assert "not found: nope" in result.output


def test_cli_purge_wants_ids_or_all_but_not_both(
    sqlite_dlq: tuple[str, list[Event]], topic: str
) -> None:
    url, events = sqlite_dlq
    assert runner.invoke(cli, ["dlq", "purge", topic, "--url", url]).exit_code == 2
    both = ["dlq", "purge", topic, events[0].id, "--all", "--url", url]
    assert runner.invoke(cli, both).exit_code == 2
