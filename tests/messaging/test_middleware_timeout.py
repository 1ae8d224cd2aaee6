"""The timeout middleware: a handler that runs too long fails with TimeoutError."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest
from tests.messaging.support import until

from tidings import App, EventTypes
from tidings.adapters.memory.broker import MemoryBroker
from tidings.messaging.handlers import Context
from tidings.messaging.middleware import dead_letter, retry, timeout
from tidings.messaging.ports import HEADER_REASON

types = EventTypes()


@types.register("job.queued")
@dataclass(frozen=True)
class Job:
    name: str


@pytest.fixture
async def topic(broker: MemoryBroker) -> str:
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    await broker.publish(name, [types.to_event(Job("j"), source="/t", partitionkey="j")])
    return name


async def reason_of_rejection(broker: MemoryBroker, app: App, topic: str) -> str:
    async with app.running():
        await until(lambda: app.stats.rejected > 0)
    async with broker.subscribe(f"{topic}.dlq", group="inspect") as dlq:
        dead = await asyncio.wait_for(anext(dlq), 1.0)
    return dead.headers[HEADER_REASON]


def test_timeout_refuses_a_limit_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="seconds must be > 0"):
        timeout(0)


async def test_a_handler_past_its_limit_is_cancelled_and_fails(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="g", types=types, middleware=[dead_letter(), timeout(0.05)])
    cancelled: list[bool] = []

    @app.handler(topic)
    async def handle(job: Job) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    reason = await reason_of_rejection(broker, app, topic)
    assert reason == "TimeoutError: the handler ran longer than 0.05 s"
    assert cancelled == [True]


async def test_a_timeout_the_handler_raises_itself_is_passed_on_unchanged(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="g", types=types, middleware=[dead_letter(), timeout(5)])

    @app.handler(topic)
    async def handle(job: Job) -> None:
        raise TimeoutError("the payment service timed out")

    reason = await reason_of_rejection(broker, app, topic)
    assert reason == "TimeoutError: the payment service timed out"


async def test_a_per_handler_timeout_limits_each_attempt_inside_the_app_retry(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="g", types=types, middleware=[dead_letter(), retry(3, base=0.001)])
    attempts: list[int] = []

    @app.handler(topic, middleware=[timeout(0.05)])
    async def handle(job: Job, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            await asyncio.sleep(5)

    async with app.running():
        await until(lambda: app.stats.acked > 0)
    assert attempts == [1, 2, 3]
