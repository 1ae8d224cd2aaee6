"""Where a partition ends and where a time falls in it, read with a short-lived consumer.

Tansu reports a partition's high watermark as the base offset of its last batch plus one, not
the offset after its last message, so the end is found by reading that last batch: fetch from
``high - 1`` and take the offset after the last message that comes back. On a broker that
reports the right watermark this reads one batch at most and agrees with it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Final

from confluent_kafka import Consumer, TopicPartition

from tidings.adapters.kafka.clients import client_config, translate_errors
from tidings.adapters.kafka.options import KafkaOptions

__all__ = ["Positions"]

_TIMEOUT: Final = 10.0
_QUIET: Final = 0.3


class Positions:
    """Reads partition ends and offsets by time for a broker."""

    def __init__(self, servers: str, options: KafkaOptions) -> None:
        self._config = client_config(
            servers,
            options,
            **{
                "group.id": f"tidings-positions-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )

    async def ends(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Return the offset after the last message of each partition."""
        return await asyncio.to_thread(self._read_ends, topic, partitions)

    async def at_time(self, topic: str, partitions: Sequence[int], millis: int) -> dict[int, int]:
        """Return, per partition, the first offset whose timestamp is >= ``millis`` (else end)."""
        return await asyncio.to_thread(self._read_times, topic, partitions, millis)

    def _read_ends(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        consumer = Consumer(self._config)
        try:
            with translate_errors(f"read the end of {topic!r}"):
                return {p: _end(consumer, topic, p) for p in partitions}
        finally:
            consumer.close()

    def _read_times(self, topic: str, partitions: Sequence[int], millis: int) -> dict[int, int]:
        consumer = Consumer(self._config)
        try:
            with translate_errors(f"find offsets by time on {topic!r}"):
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, p, millis) for p in partitions], timeout=_TIMEOUT
                )
                return {
                    tp.partition: tp.offset
                    if tp.offset >= 0
                    else _end(consumer, topic, tp.partition)
                    for tp in found
                }
        finally:
            consumer.close()


def _end(consumer: Consumer, topic: str, partition: int) -> int:
    """Return the offset after the last message of one partition (see the module docstring)."""
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=_TIMEOUT)
    if high <= low:
        return int(high)
    consumer.assign([TopicPartition(topic, partition, high - 1)])
    end, seen, deadline = int(high), False, time.monotonic() + _TIMEOUT
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(_QUIET)
            if message is None or message.error() is not None:
                if seen:  # quiet, or the consumer's idea of the end, after the last batch
                    break
                continue
            seen = True
            end = max(end, (message.offset() or 0) + 1)
    finally:
        consumer.unassign()
    return end
