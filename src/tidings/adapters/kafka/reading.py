"""Reading a partition directly (no group): the end, an offset by time, a range of messages.

Each read makes a short-lived consumer that is assigned the partition (no group membership,
nothing committed) and runs on a worker thread, so the loop never blocks.

Tansu gets two things wrong that these reads work around, harmlessly on a broker that gets
them right:

- it reports a partition's high watermark as the base offset of its last batch plus one, not
  the offset after its last message: the end is found by reading that last batch;
- its ListOffsets by timestamp can answer an earlier offset than the first message at or after
  the time: the answer is taken as a starting point, and messages are read from there until
  one's timestamp reaches the time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from tidings.adapters.kafka.clients import client_config, translate_errors
from tidings.adapters.kafka.options import KafkaOptions

__all__ = ["PartitionReader"]

_TIMEOUT: Final = 10.0
_QUIET: Final = 0.5
_ENDS: Final = frozenset(
    {KafkaError._PARTITION_EOF, KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE}
)


class PartitionReader:
    """Reads partitions of a broker's topics without joining a group."""

    def __init__(self, servers: str, options: KafkaOptions) -> None:
        self._config = client_config(
            servers,
            options,
            **{
                "group.id": f"tidings-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
            },
        )

    async def ends(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Return the offset after the last message of each partition."""

        def find(consumer: Consumer, partition: int) -> int:
            return end_of(consumer, topic, partition)

        return await asyncio.to_thread(self._each, topic, partitions, find)

    async def at_time(self, topic: str, partitions: Sequence[int], millis: int) -> dict[int, int]:
        """Return, per partition, the first offset whose timestamp is >= ``millis`` (else end)."""

        def find(consumer: Consumer, partition: int) -> int:
            return self._at_time(consumer, topic, partition, millis)

        return await asyncio.to_thread(self._each, topic, partitions, find)

    async def read(self, topic: str, partition: int, from_offset: int, limit: int) -> list[Message]:
        """Return up to ``limit`` messages of a partition from an offset, in order."""
        return await asyncio.to_thread(self._read, topic, partition, from_offset, limit)

    def _each(
        self, topic: str, partitions: Sequence[int], find: Callable[[Consumer, int], int]
    ) -> dict[int, int]:
        consumer = Consumer(self._config)
        try:
            with translate_errors(f"read positions of {topic!r}"):
                return {p: find(consumer, p) for p in partitions}
        finally:
            consumer.close()

    def _read(self, topic: str, partition: int, from_offset: int, limit: int) -> list[Message]:
        consumer = Consumer(self._config)
        try:
            with translate_errors(f"read {topic!r}[{partition}]"):
                out = []
                for message in _messages(consumer, topic, partition, from_offset):
                    out.append(message)
                    if len(out) >= limit:
                        break
                return out
        finally:
            consumer.close()

    def _at_time(self, consumer: Consumer, topic: str, partition: int, millis: int) -> int:
        found = consumer.offsets_for_times([TopicPartition(topic, partition, millis)], _TIMEOUT)
        start = found[0].offset if found and found[0].offset >= 0 else None
        if start is None:
            return end_of(consumer, topic, partition)
        last = start
        for message in _messages(consumer, topic, partition, start):
            _, stamp = message.timestamp()
            if stamp >= millis:
                return message.offset() or 0
            last = (message.offset() or 0) + 1
        return last


def end_of(consumer: Consumer, topic: str, partition: int) -> int:
    """Return the offset after the last message of one partition (see the module docstring)."""
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=_TIMEOUT)
    if high <= low:
        return int(high)
    end = int(high)
    for message in _messages(consumer, topic, partition, high - 1):
        end = max(end, (message.offset() or 0) + 1)
    return end


def _messages(consumer: Consumer, topic: str, partition: int, start: int) -> Iterator[Message]:
    """Yield a partition's messages from ``start`` until its end (or a quiet spell)."""
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + _TIMEOUT
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(_QUIET)
            if message is None:
                return
            error = message.error()
            if error is not None:
                if error.code() in _ENDS or error.fatal():
                    return
                continue
            if (message.offset() or 0) >= start:
                deadline = time.monotonic() + _TIMEOUT
                yield message
    finally:
        consumer.unassign()
