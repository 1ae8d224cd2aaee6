"""The relay: publishes what an outbox source holds to a broker, at least once, in order.

A relay repeats one step: fetch a batch from its `OutboxSource`, publish it, mark it relayed.
It works with any source (an outbox table on SQLite or PostgreSQL, PostgreSQL's WAL) and any
`Broker`. Why nothing is lost, repeated or reordered (docs/outbox.md has the whole argument):

- A message is marked only after the broker stored it (`Broker.publish` returns only then); a
  crash before the mark publishes the batch again, with the same event ids, and the broker's
  idempotent publish stores nothing new.
- A batch is published topic by topic, each topic's events in one call in batch order, and
  the source hands a relay an aggregate's messages in commit order and to no other relay
  while the batch is out; events of one aggregate share a key, so one partition, in order.
- A failed publish releases the batch (the source gives it out again) and the relay backs
  off exponentially, up to ``max_backoff`` seconds, before it tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Final

from tidings.errors import TidingsError
from tidings.events import Event
from tidings.messaging.ports import Broker
from tidings.outbox.ports import OutboxMessage, OutboxSource

__all__ = ["Relay"]

_log: Final = logging.getLogger(__name__)


def by_topic(messages: Sequence[OutboxMessage]) -> dict[str, list[Event]]:
    """Return the batch's events per topic, each list in batch order."""
    grouped: dict[str, list[Event]] = {}
    for item in messages:
        grouped.setdefault(item.topic, []).append(item.event)
    return grouped


class Relay:
    """Moves committed outbox messages from a source to a broker.

    Args:
        source: Where committed messages come from (an opened or openable source).
        broker: Where they go.
        batch_size: Most messages fetched and published in one step.
        idle_wait: Longest sleep when the outbox is empty (wake-ups usually come sooner).
        max_backoff: Longest pause after a failure.
        on_relayed: Called with each batch once it is marked (for tests and metrics).

    Attributes:
        relayed: Messages marked relayed by this relay so far.
        failures: Steps that failed so far.
    """

    def __init__(
        self,
        source: OutboxSource,
        broker: Broker,
        *,
        batch_size: int = 500,
        idle_wait: float = 1.0,
        max_backoff: float = 5.0,
        on_relayed: Callable[[Sequence[OutboxMessage]], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source = source
        self.broker = broker
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.max_backoff = max_backoff
        self.on_relayed = on_relayed
        self.relayed = 0
        self.failures = 0

    async def relay_once(self) -> int:
        """Fetch, publish and mark one batch; return its size (0 when the outbox is empty).

        Raises whatever the source or broker raised, after releasing the batch.
        """
        batch = await self.source.fetch(self.batch_size)
        if not batch:
            return 0
        try:
            for topic, events in by_topic(batch).items():
                await self.broker.publish(topic, events)
        except BaseException:
            await self._release(batch)
            raise
        await self.source.mark_relayed(batch)
        self.relayed += len(batch)
        if self.on_relayed is not None:
            self.on_relayed(batch)
        return len(batch)

    async def _release(self, batch: Sequence[OutboxMessage]) -> None:
        try:
            await asyncio.shield(self.source.release(batch))
        except Exception:  # the source frees the batch itself when its connection ends
            _log.warning("could not release an outbox batch", exc_info=True)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set (or the task is cancelled); failures are retried."""
        stop = stop or asyncio.Event()
        backoff = 0.0
        while not stop.is_set():
            try:
                relayed = await self.relay_once()
            except (TidingsError, OSError) as exc:
                self.failures += 1
                backoff = min(max(backoff * 2, 0.05), self.max_backoff)
                _log.warning("outbox relay step failed (%s); retrying in %.2fs", exc, backoff)
                await _sleep_unless(stop, backoff)
                continue
            backoff = 0.0
            if relayed < self.batch_size:
                await _first(stop, self.source.wait(self.idle_wait))

    async def drain(self) -> int:
        """Relay until a fetch comes back empty; return how many messages were relayed."""
        total = 0
        while relayed := await self.relay_once():
            total += relayed
        return total


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    await _first(stop, asyncio.sleep(seconds))


async def _first(stop: asyncio.Event, work: Coroutine[object, object, object]) -> None:
    """Wait for ``work`` or ``stop``, whichever comes first."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopper):
            pending.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
