"""Scheduling deliveries: one lane per key, a bounded number of handlers in flight.

The broker hands a group each partition's events in offset order. The dispatcher keeps that
order per key while running many keys at once:

- Every delivery joins the FIFO *lane* of its key (per topic). A lane runs one delivery at a
  time, so an event starts only after the previous event of its key was settled.
- Events without a key have no order to keep (the broker spreads them as it likes): each one
  gets a lane of its own, named by its event id.
- At most ``concurrency`` deliveries run at once, over all lanes. A handler that waits to retry
  (`Slot.pause`) gives its slot back meanwhile: the failing key waits, other keys keep flowing.
- Every delivery held, running or queued behind its key, has its ack deadline extended
  periodically, so a slow key never makes the broker hand its events to another member.

On `drain` no new delivery starts; running ones finish (up to a timeout, then they are
cancelled), and queued ones are left unsettled: the broker gives them back to the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from tidings.errors import TidingsError
from tidings.messaging.handlers import Interrupted
from tidings.messaging.ports import Delivery

__all__ = ["Dispatcher", "Pump", "Slot"]

log: Final = logging.getLogger("tidings.router")

Process = Callable[[Delivery, "Slot"], Awaitable[None]]
"""Runs and settles one delivery; must not raise (the dispatcher logs what escapes)."""


class Slot:
    """One delivery's claim on the dispatcher's concurrency, which it may give back for a while."""

    __slots__ = ("_held", "_limit", "_stopping")

    def __init__(self, limit: asyncio.Semaphore, stopping: asyncio.Event) -> None:
        self._limit = limit
        self._stopping = stopping
        self._held = False

    async def acquire(self) -> None:
        """Wait for a free slot."""
        await self._limit.acquire()
        self._held = True

    def release(self) -> None:
        """Give the slot back (once)."""
        if self._held:
            self._held = False
            self._limit.release()

    async def pause(self, seconds: float) -> None:
        """Sleep without the slot, then take one again; raise `Interrupted` if draining starts."""
        self.release()
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            await self.acquire()
            return
        raise Interrupted


class Dispatcher:
    """Runs deliveries one per key, at most ``concurrency`` at once, and keeps them alive."""

    def __init__(self, process: Process, *, concurrency: int, ack_deadline: float) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._process = process
        self._limit = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._lanes: dict[tuple[str, str], deque[Delivery]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._interval = max(ack_deadline / 3, 0.01)
        self._keeper: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        """How many deliveries are running or queued."""
        return sum(len(lane) for lane in self._lanes.values())

    def start(self) -> None:
        """Start extending the ack deadlines of held deliveries."""
        self._keeper = asyncio.create_task(self._keep_alive(), name="tidings-keep-alive")

    def submit(self, delivery: Delivery) -> None:
        """Queue a delivery behind the earlier ones of its key."""
        if self._stopping.is_set():
            return  # left unsettled: the broker gives it back
        name = delivery.key if delivery.key is not None else "\0" + delivery.event.id
        lane = self._lanes.get((delivery.topic, name))
        if lane is not None:
            lane.append(delivery)
            return
        self._lanes[(delivery.topic, name)] = deque([delivery])
        task = asyncio.create_task(self._run_lane((delivery.topic, name)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_lane(self, name: tuple[str, str]) -> None:
        lane = self._lanes[name]
        try:
            while lane and not self._stopping.is_set():
                await self._run_one(lane[0])
                lane.popleft()
        finally:
            del self._lanes[name]

    async def _run_one(self, delivery: Delivery) -> None:
        slot = Slot(self._limit, self._stopping)
        await slot.acquire()
        try:
            await self._process(delivery, slot)
        except Exception:  # a bug in settling must not stop the key's lane
            log.exception("settling %r failed", delivery)
        finally:
            slot.release()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await asyncio.gather(*(_extend(d) for lane in self._lanes.values() for d in lane))

    async def drain(self, timeout: float) -> int:
        """Start nothing new; wait up to ``timeout`` for running deliveries, then cancel them.

        Returns how many were cancelled (they stay unsettled and come back).
        """
        self._stopping.set()
        pending: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        return len(pending)


async def _extend(delivery: Delivery) -> None:
    try:
        await delivery.extend()
    except TidingsError as exc:  # closed or unreachable: the delivery may come back
        log.warning("could not extend %r: %s", delivery, exc)


class Pump:
    """Moves deliveries from one subscription to the dispatcher until stopped.

    Stopping does not close the subscription: settling a delivery needs it open, so it is
    closed (`aclose`) only once the dispatcher has drained.
    """

    def __init__(self, subscription: AsyncIterator[Delivery], submit: Callable[[Delivery], None]):
        self._subscription = subscription
        self._submit = submit
        self._next: asyncio.Task[Delivery | None] | None = None

    async def run(self) -> None:
        """Submit deliveries until cancelled or the subscription ends (an error propagates)."""
        while True:
            self._next = asyncio.create_task(_next_of(self._subscription))
            delivery = await asyncio.shield(self._next)
            if delivery is None:
                return
            self._submit(delivery)

    async def aclose(self) -> None:
        """Close the subscription (deliveries not settled come back to the group)."""
        if self._next is not None:
            self._next.cancel()
            await asyncio.gather(self._next, return_exceptions=True)
        closer = getattr(self._subscription, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


async def _next_of(iterator: AsyncIterator[Delivery]) -> Delivery | None:
    return await anext(iterator, None)
