"""The retry middleware: attempts in process, exponential backoff with jitter."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import pytest

from tidings import App, EventTypes
from tidings.adapters.memory.broker import MemoryBroker
from tidings.messaging.handlers import Context
from tidings.messaging.middleware import dead_letter, retry
from tidings.messaging.middleware.retry import backoff
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


async def until_settled(app: App) -> None:
    for _ in range(1000):
        if app.stats.acked + app.stats.rejected + app.stats.nacked:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not settled")


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.0), (30, 1.0)]
)
def test_backoff_doubles_from_base_up_to_max_delay(attempt: int, expected: float) -> None:
    pause = backoff(attempt, base=0.1, max_delay=1.0, jitter=0.0)
    assert pause == pytest.approx(expected)


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 1.0), (0.5, 0.75), (1.0, 0.5)])
def test_backoff_jitter_takes_away_up_to_its_share(draw: float, factor: float) -> None:
    pause = backoff(2, base=1.0, max_delay=10.0, jitter=0.5, rand=lambda: draw)
    assert pause == pytest.approx(2.0 * factor)


@pytest.mark.parametrize(
    "options", [{"max_attempts": 0}, {"jitter": -0.1}, {"jitter": 1.5}], ids=str
)
def test_retry_refuses_nonsense_options(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        retry(**options)  # type: ignore[arg-type]


async def test_retry_runs_the_handler_again_until_it_succeeds(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="g", types=types, middleware=[retry(5, base=0.05, jitter=0)])
    times: list[tuple[int, float]] = []

    @app.handler(topic)
    async def handle(job: Job, ctx: Context) -> None:
        times.append((ctx.attempt, time.monotonic()))
        if ctx.attempt < 3:
            raise RuntimeError("flaky")

    async with app.running():
        await until_settled(app)
    assert [attempt for attempt, _ in times] == [1, 2, 3]
    first_pause, second_pause = times[1][1] - times[0][1], times[2][1] - times[1][1]
    assert 0.045 <= first_pause < second_pause
    assert second_pause >= 0.095
    assert (app.stats.acked, app.stats.nacked) == (1, 0)


async def test_retry_gives_up_after_max_attempts_with_the_last_error(
    broker: MemoryBroker, topic: str
) -> None:
    app = App(broker, group="g", types=types, middleware=[dead_letter(), retry(3, base=0.001)])
    attempts: list[int] = []

    @app.handler(topic)
    async def handle(job: Job, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"failure {ctx.attempt}")

    async with app.running():
        await until_settled(app)
    assert attempts == [1, 2, 3]
    async with broker.subscribe(f"{topic}.dlq", group="inspect") as dlq:
        dead = await asyncio.wait_for(anext(dlq), 1.0)
    assert dead.headers[HEADER_REASON] == "RuntimeError: failure 3"
