"""Acks batched per group: the acks made while one batch is on the wire go in the next.

A consumer that acks one delivery at a time would otherwise wait one round trip per event.
`AckBatcher.submit` queues an ack and returns a future; one flusher task sends everything
queued for a group in one `ACK_MANY` script call, then whatever was queued meanwhile, until
the queue is empty. The order between a member's acks and its leave is kept by `drain`, which
`RedisBroker` awaits before a member leaves and before it closes.

With ``await_acks=False`` (the default) ``ack()`` returns once queued: an ack lost to a crash
before its batch reaches Redis means one more delivery of that event, never a lost event.
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
        self._queued: dict[GroupKey, list[tuple[Claimed, asyncio.Future[None]]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    def submit(self, topic: str, group: str, claimed: Claimed) -> asyncio.Future[None]:
        """Queue one ack; the future resolves when its batch was applied."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.setdefault((topic, group), []).append((claimed, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return done

    async def _flush(self) -> None:
        while self._queued:
            queued, self._queued = self._queued, {}
            for (topic, group), entries in queued.items():
                await self._send_batch(topic, group, entries)

    async def _send_batch(
        self, topic: str, group: str, entries: list[tuple[Claimed, asyncio.Future[None]]]
    ) -> None:
        try:
            await self._send(topic, group, [claimed for claimed, _ in entries])
        except Exception as exc:  # each waiter gets it; unawaited ones are logged once
            _log.warning(
                "%d acks of %r on %r were not applied: %s", len(entries), group, topic, exc
            )
            for _, done in entries:
                if not done.done():
                    done.set_exception(exc)
                    done.add_done_callback(_retrieve)
            return
        for _, done in entries:
            if not done.done():
                done.set_result(None)

    async def drain(self) -> None:
        """Wait until every ack queued so far was sent (or failed)."""
        while self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)


def _retrieve(future: asyncio.Future[None]) -> None:
    future.exception()
