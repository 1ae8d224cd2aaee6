"""Stopping tidings.App: running handlers finish, the rest come back to the group, none twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import pytest
from tests.messaging.support import until

from tidings import App, EventTypes
from tidings.adapters.memory.broker import MemoryBroker
from tidings.messaging.handlers import Context
from tidings.messaging.middleware import retry

types = EventTypes()


@types.register("step.done")
@dataclass(frozen=True)
class Step:
    key: str
    seq: int


@pytest.fixture
def topic() -> str:
    return f"steps-{uuid.uuid4().hex[:8]}"


async def publish_steps(broker: MemoryBroker, topic: str, key: str, count: int) -> None:
    events = [types.to_event(Step(key, n), source="/t", partitionkey=key) for n in range(count)]
    await broker.publish(topic, events)


async def test_stop_lets_running_handlers_finish_and_hands_the_rest_back(
    broker: MemoryBroker, topic: str
) -> None:
    await publish_steps(broker, topic, "k", 10)
    handled: list[tuple[str, int]] = []
    third_running, release = asyncio.Event(), asyncio.Event()

    def make(name: str) -> App:
        app = App(broker, group="g", types=types)

        @app.handler(topic)
        async def handle(step: Step) -> None:
            if name == "first" and step.seq == 2:
                third_running.set()
                await release.wait()
            handled.append((name, step.seq))

        return app

    first = make("first")
    async with first.running():
        await third_running.wait()
        first.stop()
        await asyncio.sleep(0.05)  # draining: nothing new starts
        release.set()
    second = make("second")
    async with second.running():
        await until(lambda: len(handled) == 10)
    assert handled == [("first", n) for n in range(3)] + [("second", n) for n in range(3, 10)]
    assert (first.stats.acked, second.stats.acked) == (3, 7)


async def test_a_handler_running_past_the_drain_timeout_is_cancelled_and_comes_back(
    broker: MemoryBroker, topic: str
) -> None:
    await publish_steps(broker, topic, "k", 1)
    attempts: list[int] = []
    app = App(broker, group="g", types=types, drain_timeout=0.1)

    @app.handler(topic)
    async def handle(step: Step, ctx: Context) -> None:
        attempts.append(ctx.delivery.attempt)
        if ctx.delivery.attempt == 1:
            await asyncio.sleep(30)

    async with app.running():
        await until(lambda: attempts == [1])
    assert app.stats.cancelled == 1
    async with app.running():
        await until(lambda: app.stats.acked == 1)
    assert attempts == [1, 2]


async def test_stop_interrupts_a_retry_backoff_and_leaves_the_event_unsettled(
    broker: MemoryBroker, topic: str
) -> None:
    await publish_steps(broker, topic, "k", 1)
    app = App(broker, group="g", types=types, middleware=[retry(3, base=30.0)])

    @app.handler(topic)
    async def handle(step: Step, ctx: Context) -> None:
        if ctx.delivery.attempt == 1:
            raise RuntimeError("down")

    async with app.running():
        await until(lambda: app.stats.received == 1)
        await asyncio.sleep(0.02)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 1.0
    assert (app.stats.interrupted, app.stats.nacked, app.stats.acked) == (1, 0, 0)
    async with app.running():
        await until(lambda: app.stats.acked == 1)


async def test_stop_before_run_returns_at_once(broker: MemoryBroker, topic: str) -> None:
    app = App(broker, group="g", types=types)

    @app.handler(topic)
    async def handle(step: Step) -> None: ...

    app.stop()
    await asyncio.wait_for(app.run(), 2.0)
