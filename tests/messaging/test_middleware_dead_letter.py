"""The dead-letter middleware: reject with the reason once retries are over, on delivery N."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest
from tests.messaging.support import until

from tidings import App, EventTypes
from tidings.adapters.memory.broker import MemoryBroker
from tidings.messaging import Delivery
from tidings.messaging.handlers import Context
from tidings.messaging.middleware import dead_letter
from tidings.messaging.middleware.dead_letter import reason_of
from tidings.messaging.ports import HEADER_ATTEMPTS, HEADER_ORIGIN, HEADER_REASON

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


async def dead_letters_of(broker: MemoryBroker, topic: str) -> list[Delivery]:
    got: list[Delivery] = []
    async with broker.subscribe(f"{topic}.dlq", group="inspect") as dlq:
        while True:
            try:
                got.append(await asyncio.wait_for(anext(dlq), 0.2))
            except TimeoutError:
                return got


async def run_until_rejected(app: App) -> None:
    async with app.running():
        await until(lambda: app.stats.rejected > 0)


def test_reason_of_names_the_error_class_and_its_text() -> None:
    assert reason_of(ValueError("bad total")) == "ValueError: bad total"
    assert reason_of(TimeoutError()) == "TimeoutError"


def test_dead_letter_refuses_after_below_one() -> None:
    with pytest.raises(ValueError, match="after must be >= 1"):
        dead_letter(after=0)


async def test_a_failure_is_rejected_with_its_reason_origin_and_attempts(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="g", types=types, middleware=[dead_letter()])

    @app.handler(topic)
    async def handle(job: Job) -> None:
        raise LookupError("no such customer")

    await run_until_rejected(app)
    [dead] = await dead_letters_of(broker, topic)
    assert dead.headers[HEADER_REASON] == "LookupError: no such customer"
    assert (dead.headers[HEADER_ATTEMPTS], dead.headers[HEADER_ORIGIN]) == ("1", topic)
    assert dead.event.type == "job.queued"
    assert app.stats.nacked == 0


async def test_failures_before_delivery_after_are_nacked_then_the_last_is_rejected(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="g", types=types, middleware=[dead_letter(after=2)])
    deliveries: list[int] = []

    @app.handler(topic)
    async def handle(job: Job, ctx: Context) -> None:
        deliveries.append(ctx.delivery.attempt)
        raise RuntimeError("still broken")

    await run_until_rejected(app)
    assert deliveries == [1, 2]
    assert app.stats.nacked == 1
    [dead] = await dead_letters_of(broker, topic)
    assert dead.headers[HEADER_ATTEMPTS] == "2"


async def test_a_handler_that_succeeds_is_acked_and_nothing_is_dead_lettered(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="g", types=types, middleware=[dead_letter()])

    @app.handler(topic)
    async def handle(job: Job) -> None: ...

    async with app.running():
        await until(lambda: app.stats.acked > 0)
    assert await dead_letters_of(broker, topic) == []
