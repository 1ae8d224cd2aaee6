"""What the broker conformance cases share: names, events, a background consumer, fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import pytest
import pytest_asyncio

from tidings.events import Event
from tidings.messaging.ports import Broker, Capabilities, Delivery, StartFrom
from tidings.testing.conformance.broker.harness import BrokerHarness

SOURCE: Final = "/tidings/conformance/broker"
WAIT: Final = 15.0
"""Seconds a case waits for deliveries before it fails."""

Handler = Callable[[Delivery], Awaitable[None]]


def topic_name(prefix: str = "topic") -> str:
    """Return a topic name no other case uses."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def group_name(prefix: str = "group") -> str:
    """Return a group name no other case uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_events(count: int, *, key: str | None = None, tag: str = "") -> list[Event]:
    """Return ``count`` small events numbered ``n`` in their data, with an optional key."""
    return [
        Event(type="conformance.tested", source=SOURCE, data={"n": n, "tag": tag}, partitionkey=key)
        for n in range(count)
    ]


def numbers(deliveries: list[Delivery]) -> list[int]:
    """Return the ``n`` of each delivered event."""
    return [d.event.data["n"] for d in deliveries]  # type: ignore[index]


async def ack(delivery: Delivery) -> None:
    """The default handler: acknowledge at once."""
    await delivery.ack()


async def keep(delivery: Delivery) -> None:
    """A handler that leaves the delivery unsettled."""


async def eventually(
    condition: Callable[[], bool], *, timeout: float = WAIT, what: str = "the condition"
) -> None:
    """Wait until ``condition()`` holds; raise TimeoutError naming ``what`` if it does not."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - other tasks change what it looks at
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise TimeoutError(f"{what} did not hold within {timeout}s") from None


@contextlib.asynccontextmanager
async def closing(subscription: AsyncIterator[Delivery]) -> AsyncIterator[AsyncIterator[Delivery]]:
    """Use a subscription in ``async with``: it is closed (``aclose()``) on the way out."""
    try:
        yield subscription
    finally:
        aclose = getattr(subscription, "aclose", None)
        if aclose is not None:
            await aclose()


class Consumer:
    """One member of a group, reading in a background task; each delivery goes to a handler.

    Every delivery is kept in `seen` (in arrival order) and queued for `take`.
    """

    def __init__(
        self,
        broker: Broker,
        topic: str,
        *,
        group: str,
        handler: Handler = ack,
        ack_deadline: float = 30.0,
        prefetch: int = 64,
        start: StartFrom = StartFrom.EARLIEST,
    ) -> None:
        self.seen: list[Delivery] = []
        self._subscription = broker.subscribe(
            topic, group=group, ack_deadline=ack_deadline, prefetch=prefetch, start=start
        )
        self._handler = handler
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Consumer:
        """Join the group, then read in the background; return self."""
        join = getattr(self._subscription, "join", None)
        if join is not None:
            await join()
        self._task = asyncio.create_task(self._pump())
        return self

    async def _pump(self) -> None:
        async for delivery in self._subscription:
            self.seen.append(delivery)
            self._queue.put_nowait(delivery)
            await self._handler(delivery)

    async def take(self, count: int, *, timeout: float = WAIT) -> list[Delivery]:
        """Return the next ``count`` deliveries; fail if they do not come in time."""
        out: list[Delivery] = []
        try:
            async with asyncio.timeout(timeout):
                while len(out) < count:
                    out.append(await self._queue.get())
        except TimeoutError:
            self._raise_pump_error()
            pytest.fail(f"the consumer got {len(out)} of {count} deliveries in {timeout}s")
        return out

    async def expect_quiet(self, seconds: float = 0.5) -> None:
        """Fail if anything more is delivered within ``seconds``."""
        await asyncio.sleep(seconds)
        extra = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        assert not extra, f"unexpected deliveries: {extra}"

    def _raise_pump_error(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()

    async def stop(self) -> None:
        """Stop reading and leave the group (unsettled deliveries go back to it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._raise_pump_error()
        aclose = getattr(self._subscription, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> Consumer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@pytest.mark.asyncio
class _Fixtures:
    """Fixtures every case class shares; the ``harness`` fixture comes from the backend."""

    backend_name: str
    backend_capabilities: Capabilities
    harness: BrokerHarness

    @pytest.fixture(autouse=True)
    def _bind_harness(self, harness: BrokerHarness) -> None:
        self.harness = harness
        self.backend_name = harness.name
        self.backend_capabilities = harness.capabilities

    @pytest_asyncio.fixture
    async def broker(self, harness: BrokerHarness) -> AsyncIterator[Broker]:
        """A fresh, opened broker, closed after the case."""
        broker = await harness.make_broker()
        yield broker
        await broker.aclose()

    @pytest.fixture
    def topic(self) -> str:
        """A topic no other case uses."""
        return topic_name()

    @property
    def tick(self) -> float:
        """The harness's unit of time for timing cases."""
        return self.harness.features.tick

    def require(self, feature: str) -> None:
        """Skip the case unless the harness claims a feature."""
        if not getattr(self.harness.features, feature):
            pytest.skip(f"the {self.backend_name} harness does not claim feature {feature!r}")
