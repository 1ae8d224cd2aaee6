"""Acks batched per group: the acks made while one batch is on the wire go in the next.

A consumer that acks one delivery at a time would otherwise wait one round trip per event.
`AckBatcher.submit` queues an ack (a list append, nothing per ack on the event loop); one
flusher task sends everything queued for a group in one `ACK_MANY` script call, then whatever
was queued meanwhile, until the queue is empty. The order between a member's acks and its
leave is kept by `drain`, which `RedisBroker` awaits before a member leaves and before it
closes.

With ``await_acks=False`` (the default) ``ack()`` returns once queued: an ack lost to a crash
before its batch reaches Redis (or a batch that fails, which is logged) means one more delivery
of that event, never a lost event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from tidings.messaging.base import Claimed

__all__ = ["AckBatcher"]

_log: Final = logging.getLogger("tidings.redis")

GroupKey = tuple[str, str]
Send = Callable[[str, str, Sequence[Claimed]], Awaitable[int]]


class AckBatcher:
    """Queues acks per (topic, group) and sends each queue in one script call."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._queued: dict[GroupKey, list[Claimed]] = {}
        self._flusher: asyncio.Task[None] | None = None

    def submit(self, topic: str, group: str, claimed: Claimed) -> None:
        """Queue one ack; it is sent with the group's next batch."""
        queue = self._queued.get((topic, group))
        if queue is None:
            self._queued[topic, group] = queue = []
        queue.append(claimed)
        flusher = self._flusher
        if flusher is None or flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._queued:
            queued, self._queued = self._queued, {}
            for (topic, group), entries in queued.items():
                await self._send_batch(topic, group, entries)

    async def _send_batch(self, topic: str, group: str, entries: list[Claimed]) -> None:
        try:
            await self._send(topic, group, entries)
        except Exception as exc:  # no one waits for a batch: its entries come back instead
            _log.warning(
                "%d acks of %r on %r were not applied: %s", len(entries), group, topic, exc
            )

    async def drain(self) -> None:
        """Wait until every ack queued so far was sent (or failed)."""
        while self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)
