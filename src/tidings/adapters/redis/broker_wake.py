"""Wake-ups across processes: the broker's scripts PUBLISH on ``<prefix>:wake:<topic>``.

Publishing, nacking, leaving, replaying, and an ack that frees a partition publish one message
on the topic's wake channel. `WakeListener` subscribes to the channels of the topics this
broker's members joined and calls ``notify`` (the broker's in-process wake-up) for each
message, so a member in another process claims at once instead of at its next heartbeat.

The listener is best effort: when its connection fails (the server restarted) it reconnects
with a growing pause and wakes everyone once it is back, because it cannot know what it missed.
Members still claim at least every heartbeat without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from tidings.adapters.redis.broker_cancel import call

__all__ = ["WakeListener"]

_log: Final = logging.getLogger("tidings.redis")
_PAUSE: Final = (0.05, 2.0)


class WakeListener:
    """Subscribes to wake channels and calls ``notify`` for each message."""

    def __init__(self, client: aioredis.Redis, notify: Callable[[], None]) -> None:
        self._client = client
        self._notify = notify
        self._channels: set[str] = set()
        self._pubsub: aioredis.client.PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._listened = False

    async def watch(self, channel: str) -> None:
        """Listen to ``channel`` from now on (starts the listener on first use)."""
        if channel in self._channels:
            return
        self._channels.add(channel)
        if self._pubsub is not None:
            with contextlib.suppress(redis_errors.RedisError):
                await call(self._pubsub.subscribe(channel))
        if self._task is None:
            self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        pause = _PAUSE[0]
        while True:
            try:
                await self._session()
            except (redis_errors.RedisError, OSError) as exc:
                _log.debug("wake channel lost (%s); reconnecting in %.2fs", exc, pause)
            pause = _PAUSE[0] if self._listened else min(pause * 2, _PAUSE[1])
            self._listened = False
            await asyncio.sleep(pause)

    async def _session(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub = pubsub
        try:
            await call(pubsub.subscribe(*self._channels))
            self._listened = True
            self._notify()  # what was published while we were away
            while True:
                message = await call(pubsub.get_message(timeout=None))
                if message is not None:
                    self._notify()
        finally:
            self._pubsub = None
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
