"""Retention by age and count that never drops an event a group has not settled.

JetStream's own limits (``max_age``, ``max_msgs`` with limits retention) remove messages
without looking at consumers: a group that is behind, or holds an event nacked with a delay,
would lose it. So topic streams carry no limits, and a broker trims them itself: per
partition, it purges the events that are too old or beyond the newest ``max_count``, but never
past the *ack floor* of any of the partition's durable consumers (the highest sequence up to
which a group has settled everything). A group that is behind therefore holds retention back
until it catches up; a topic without groups is trimmed to its limits.

Counts are per partition (as in Kafka). A broker trims the topics it has created, published to
or subscribed to: after publishes, before a new group joins (so it does not start on expired
events), and every second; with no broker running, nothing is trimmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Final

import nats.js.errors
from nats.js import api
from nats.js.manager import JetStreamManager

from tidings.adapters.nats.connection import translate_errors, wait_event
from tidings.adapters.nats.naming import TopicNames
from tidings.adapters.nats.topics import TopicCatalog
from tidings.messaging.ports import Retention, TopicInfo

__all__ = ["Trimmer"]

_INTERVAL: Final = 1.0
log: Final = logging.getLogger("tidings.nats")


class Trimmer:
    """Applies the retention of the topics a broker knows (see the module docstring)."""

    def __init__(self, jsm: JetStreamManager, catalog: TopicCatalog) -> None:
        self._jsm = jsm
        self._catalog = catalog
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start trimming in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="tidings-nats-retention")

    async def aclose(self) -> None:
        """Stop trimming."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def touch(self, info: TopicInfo) -> None:
        """Trim a topic soon (events were published to it)."""
        if _limited(info.retention):
            self._dirty.add(info.name)
            self._wake.set()

    async def trim(self, info: TopicInfo) -> int:
        """Trim a topic now; return how many events were removed."""
        if not _limited(info.retention):
            return 0
        names = TopicNames.of(info.name)
        removed = 0
        with translate_errors(f"apply the retention of {info.name!r}"):
            for partition in range(info.partitions):
                removed += await self._trim(names.stream(partition), info.retention)
        return removed

    async def _loop(self) -> None:
        while True:
            await wait_event(self._wake, _INTERVAL)
            self._wake.clear()
            self._dirty.clear()
            for info in self._catalog.known():
                try:
                    await self.trim(info)
                except Exception as exc:  # keep trimming the others; it runs again soon
                    log.debug("retention of %s failed: %r", info.name, exc)

    async def _trim(self, stream: str, retention: Retention) -> int:
        try:
            state = (await self._jsm.stream_info(stream)).state
        except nats.js.errors.NotFoundError:
            return 0
        if not state.messages:
            return 0
        cut = state.first_seq - 1  # purge every sequence <= cut
        if retention.max_count is not None:
            cut = max(cut, state.last_seq - retention.max_count)
        if retention.max_age is not None:
            cut = max(cut, await self._expired_up_to(stream, retention, state.last_seq))
        floor = await self._ack_floor(stream)
        if floor is not None:
            cut = min(cut, floor)
        if cut < state.first_seq:
            return 0
        await self._jsm.purge_stream(stream, seq=cut + 1)
        return cut - state.first_seq + 1

    async def _expired_up_to(self, stream: str, retention: Retention, last: int) -> int:
        """Return the last sequence stored before the age limit (0 when none is)."""
        assert retention.max_age is not None
        since = datetime.now(UTC) - retention.max_age
        probe = await self._jsm.add_consumer(
            stream,
            api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE,
                deliver_policy=api.DeliverPolicy.BY_START_TIME,
                opt_start_time=since,
                inactive_threshold=5.0,
            ),
        )
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._jsm.delete_consumer(stream, probe.name)
        return last - (probe.num_pending or 0)

    async def _ack_floor(self, stream: str) -> int | None:
        consumers = await self._jsm.consumers_info(stream)
        floors = [
            info.ack_floor.stream_seq if info.ack_floor is not None else 0
            for info in consumers
            if info.config.durable_name
        ]
        return min(floors) if floors else None


def _limited(retention: Retention) -> bool:
    return retention.max_age is not None or retention.max_count is not None
