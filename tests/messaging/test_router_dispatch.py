"""How tidings.App schedules deliveries: order per key, bounded concurrency, keys that wait."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tidings import App, EventTypes
from tidings.adapters.memory.broker import MemoryBroker
from tidings.messaging import Broker
from tidings.messaging.handlers import Context
from tidings.messaging.middleware import dead_letter, retry
from tidings.messaging.router import connected

types = EventTypes()


@types.register("step.done")
@dataclass(frozen=True)
class Step:
    key: str
    seq: int


@pytest.fixture(params=["memory", "sqlite"])
async def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'b.db'}"
    async with connected(url) as opened:
        yield opened


@pytest.fixture
def topic() -> str:
    return f"steps-{uuid.uuid4().hex[:8]}"


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out waiting")


async def publish_steps(broker: Broker, topic: str, keys: list[str], count: int) -> None:
    """Publish ``count`` steps per key, the keys interleaved."""
    events = [
        types.to_event(Step(key, seq), source="/test", partitionkey=key)
        for seq in range(count)
        for key in keys
    ]
    await broker.publish(topic, events)


class Tracker:
    """Records what a handler does: per-key order, keys in flight, handlers in flight."""

    def __init__(self) -> None:
        self.done: dict[str, list[int]] = defaultdict(list)
        self.active: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.overlaps: list[str] = []

    def enter(self, key: str) -> None:
        if key in self.active:
            self.overlaps.append(key)
        self.active.add(key)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def leave(self, key: str) -> None:
        self.active.discard(key)
        self.in_flight -= 1

    @property
    def total(self) -> int:
        return sum(len(seqs) for seqs in self.done.values())


async def test_order_per_key_is_kept_by_32_handlers_with_injected_failures(
    any_broker: Broker, topic: str
) -> None:
    broker = any_broker
    keys, count = [f"k{i}" for i in range(48)], 15
    rng = random.Random(2024)
    failures = {(k, s): rng.choice([0, 0, 0, 1, 2, 3]) for k in keys for s in range(count)}
    await broker.create_topic(topic, partitions=8)
    await publish_steps(broker, topic, keys, count)
    track = Tracker()
    app = App(
        broker,
        group="g",
        types=types,
        concurrency=32,
        prefetch=1000,
        middleware=[dead_letter(), retry(5, base=0.001, max_delay=0.005)],
    )

    @app.handler(topic)
    async def handle(step: Step, ctx: Context) -> None:
        track.enter(step.key)
        try:
            await asyncio.sleep(rng.uniform(0, 0.004))
            if ctx.attempt <= failures[(step.key, step.seq)]:
                raise RuntimeError("injected")
            track.done[step.key].append(step.seq)
        finally:
            track.leave(step.key)

    async with app.running():
        await until(lambda: track.total == len(keys) * count)
    assert track.overlaps == []
    assert all(track.done[k] == list(range(count)) for k in keys)
    assert 8 < track.most_in_flight <= 32, track.most_in_flight
    assert (app.stats.acked, app.stats.rejected) == (len(keys) * count, 0)


async def test_a_key_that_waits_to_retry_lets_other_keys_flow(
    broker: MemoryBroker, topic: str
) -> None:
    await publish_steps(broker, topic, ["slow"], 2)
    await publish_steps(broker, topic, ["fast"], 5)
    finished: list[tuple[str, int]] = []
    app = App(
        broker,
        group="g",
        types=types,
        concurrency=1,  # the retrying handler gives its only slot back while it waits
        middleware=[retry(3, base=0.3, jitter=0)],
    )

    @app.handler(topic)
    async def handle(step: Step, ctx: Context) -> None:
        if step.key == "slow" and step.seq == 0 and ctx.attempt < 3:
            raise RuntimeError("not yet")
        finished.append((step.key, step.seq))

    async with app.running():
        await until(lambda: len(finished) == 7)
    slow = [entry for entry in finished if entry[0] == "slow"]
    assert slow == [("slow", 0), ("slow", 1)]
    assert finished.index(("fast", 4)) < finished.index(("slow", 0))


async def test_a_slow_key_keeps_its_deliveries_by_extending_their_deadlines(
    broker: MemoryBroker, topic: str
) -> None:
    await publish_steps(broker, topic, ["k"], 3)
    seen: list[tuple[int, int]] = []
    app = App(broker, group="g", types=types, ack_deadline=0.3)

    @app.handler(topic)
    async def handle(step: Step, ctx: Context) -> None:
        await asyncio.sleep(0.6)  # twice the deadline; the next steps wait behind it
        seen.append((step.seq, ctx.delivery.attempt))

    async with app.running():
        await until(lambda: len(seen) == 3)
        await asyncio.sleep(0.3)
    assert seen == [(0, 1), (1, 1), (2, 1)]


async def test_events_without_a_key_run_concurrently(broker: MemoryBroker, topic: str) -> None:
    events = [types.to_event(Step("", n), source="/test") for n in range(8)]
    await broker.publish(topic, events)
    track = Tracker()
    app = App(broker, group="g", types=types, concurrency=8)

    @app.handler(topic)
    async def handle(step: Step) -> None:
        track.enter(str(step.seq))
        await asyncio.sleep(0.1)
        track.done[""].append(step.seq)
        track.leave(str(step.seq))

    async with app.running():
        await until(lambda: track.total == 8)
    assert track.most_in_flight > 1


async def test_concurrency_bounds_handlers_in_flight(broker: MemoryBroker, topic: str) -> None:
    await publish_steps(broker, topic, [f"k{i}" for i in range(12)], 2)
    track = Tracker()
    app = App(broker, group="g", types=types, concurrency=3)

    @app.handler(topic)
    async def handle(step: Step) -> None:
        track.enter(step.key)
        await asyncio.sleep(0.01)
        track.done[step.key].append(step.seq)
        track.leave(step.key)

    async with app.running():
        await until(lambda: track.total == 24)
    assert track.most_in_flight == 3
