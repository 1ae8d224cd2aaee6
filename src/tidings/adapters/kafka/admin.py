"""Topics and group offsets through Kafka's admin API, without blocking the loop.

Topics are created explicitly with the requested partition count (a Kafka-protocol broker
would otherwise auto-create a missing topic with its own default; Tansu uses 4). A topic's
partition count is cached once known: partitions are never removed.

Group offsets are read and altered here: for replays of a group that has no member in this
process, and for the delivery ledger (`tidings.adapters.kafka.ledger`). Kafka refuses to alter
the offsets of a group that has live members.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tidings.adapters.kafka.clients import client_config, translate_errors, wait
from tidings.adapters.kafka.options import KafkaOptions
from tidings.messaging.ports import TopicInfo

__all__ = ["Admin"]


class Admin:
    """One admin client per broker, with the partition counts of the topics it has seen."""

    def __init__(self, servers: str, options: KafkaOptions) -> None:
        self._client = AdminClient(client_config(servers, options))  # type: ignore[arg-type]
        self._timeout = options.request_timeout
        self._partitions: dict[str, int] = {}

    def known(self, topic: str) -> int | None:
        """Return the cached partition count of a topic, or None."""
        return self._partitions.get(topic)

    def known_topics(self) -> list[str]:
        """Return the topics this admin has created or described."""
        return list(self._partitions)

    async def describe(self, topic: str) -> int | None:
        """Return a topic's partition count, or None when it does not exist."""
        if topic in self._partitions:
            return self._partitions[topic]
        with translate_errors(f"describe topic {topic!r}"):
            metadata = await asyncio.to_thread(self._client.list_topics, timeout=self._timeout)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return None
        self._partitions[topic] = len(found.partitions)
        return self._partitions[topic]

    async def ensure(self, topic: str, partitions: int) -> TopicInfo:
        """Create a topic unless it exists; return its shape (an existing one keeps its own)."""
        existing = await self.describe(topic)
        if existing is None:
            futures = self._client.create_topics(
                [NewTopic(topic, partitions, 1)], operation_timeout=self._timeout
            )
            try:
                await wait(futures[topic], f"create topic {topic!r}")
            except Exception as exc:
                if not _already_exists(exc):
                    raise
            self._partitions.pop(topic, None)
            existing = await self.describe(topic) or partitions
            self._partitions[topic] = existing
        return TopicInfo(topic, existing)

    async def group_offsets(self, group: str, topic: str, partitions: int) -> dict[int, int]:
        """Return a group's committed offset per partition (partitions without one left out)."""
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in range(partitions)]
        )
        futures = self._client.list_consumer_group_offsets([request], request_timeout=self._timeout)
        result = await wait(futures[group], f"read offsets of group {group!r}")
        return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}

    async def alter_group_offsets(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Set a group's committed offsets (Kafka allows it only while the group is empty)."""
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())]
        )
        futures = self._client.alter_consumer_group_offsets(
            [request], request_timeout=self._timeout
        )
        result = await wait(futures[group], f"move group {group!r} on {topic!r}")
        for tp in result.topic_partitions:
            if tp.error is not None:
                with translate_errors(f"move group {group!r} on {topic!r}"):
                    raise _exception(tp.error)

    async def groups(self) -> list[str]:
        """Return the ids of every consumer group the cluster knows."""
        future = self._client.list_consumer_groups(request_timeout=self._timeout)
        result = await wait(future, "list consumer groups")
        return [listing.group_id for listing in result.valid]

    async def delete_topic(self, topic: str) -> None:
        """Delete a topic (used by tests to clean up)."""
        self._partitions.pop(topic, None)
        futures = self._client.delete_topics([topic], operation_timeout=self._timeout)
        await wait(futures[topic], f"delete topic {topic!r}")


def _already_exists(exc: BaseException) -> bool:
    cause = exc.__cause__
    error = cause.args[0] if cause is not None and cause.args else None
    return isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS


def _exception(error: KafkaError) -> Exception:
    from confluent_kafka import KafkaException

    return KafkaException(error)
