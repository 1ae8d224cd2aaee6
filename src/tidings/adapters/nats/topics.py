"""Topics as JetStream streams: one file-backed stream per partition, created on demand.

A topic's shape (its name, partition count and retention) is written as JSON into the
``description`` of each of its streams, so any process can read it back from partition 0.
Partition 0 is created last: once it exists, the whole topic does.

The streams carry no ``max_age`` or ``max_msgs``: JetStream enforces those limits without
looking at consumers, so it would drop events a group has not settled yet. Retention is
applied by `tidings.adapters.nats.retention` instead, never past any group's ack floor.
"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from typing import Final, cast

import nats.js.errors
from nats.js import api
from nats.js.manager import JetStreamManager

from tidings.adapters.nats.connection import translate_errors
from tidings.adapters.nats.naming import TopicNames
from tidings.messaging.ports import Retention, TopicInfo

__all__ = ["TopicCatalog"]

_STREAM_NAME_IN_USE: Final = 10058


class TopicCatalog:
    """Creates topics and remembers their shape (name -> `TopicInfo`) for this process."""

    def __init__(self, jsm: JetStreamManager, *, duplicate_window: float) -> None:
        self._jsm = jsm
        self._duplicate_window = duplicate_window
        self._known: dict[str, TopicInfo] = {}

    def known(self) -> list[TopicInfo]:
        """Return the topics this process has created or looked up."""
        return list(self._known.values())

    async def create(
        self, topic: str, *, partitions: int = 4, retention: Retention | None = None
    ) -> TopicInfo:
        """Create a topic unless it exists; return its shape (an existing one keeps its own)."""
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        existing = await self.find(topic)
        if existing is not None:
            return existing
        info = TopicInfo(topic, partitions, retention or Retention())
        names = TopicNames.of(topic)
        for partition in reversed(range(partitions)):
            if not await self._add_stream(names, partition, info):
                found = await self.find(topic)  # another process created it first
                if found is not None:
                    return found
        self._known[topic] = info
        return info

    async def get(self, topic: str) -> TopicInfo:
        """Return a topic's shape, creating it with the defaults when it does not exist."""
        info = self._known.get(topic)
        return info if info is not None else await self.create(topic)

    async def find(self, topic: str) -> TopicInfo | None:
        """Return a topic's shape as stored on the server, or None when it does not exist."""
        if topic in self._known:
            return self._known[topic]
        stream = TopicNames.of(topic).stream(0)
        with translate_errors(f"read topic {topic!r}"):
            try:
                info = await self._jsm.stream_info(stream)
            except nats.js.errors.NotFoundError:
                return None
        found = _parse_description(topic, info.config.description)
        self._known[topic] = found
        return found

    async def delete(self, info: TopicInfo) -> None:
        """Delete a topic's streams (with every group's progress in them)."""
        self._known.pop(info.name, None)
        names = TopicNames.of(info.name)
        with translate_errors(f"delete topic {info.name!r}"):
            for partition in range(info.partitions):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self._jsm.delete_stream(names.stream(partition))

    async def _add_stream(self, names: TopicNames, partition: int, info: TopicInfo) -> bool:
        config = api.StreamConfig(
            name=names.stream(partition),
            description=_description(info, partition),
            subjects=[names.subject(partition)],
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            storage=api.StorageType.FILE,
            num_replicas=1,
            duplicate_window=self._duplicate_window,
        )
        with translate_errors(f"create topic {info.name!r}"):
            try:
                await self._jsm.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code == _STREAM_NAME_IN_USE:
                    return False
                raise
        return True


def _description(info: TopicInfo, partition: int) -> str:
    retention = info.retention
    age = None if retention.max_age is None else retention.max_age.total_seconds()
    return json.dumps(
        {
            "tidings": 1,
            "topic": info.name,
            "partition": partition,
            "partitions": info.partitions,
            "max_age": age,
            "max_count": retention.max_count,
        },
        sort_keys=True,
    )


def _parse_description(topic: str, description: str | None) -> TopicInfo:
    try:
        shape = cast(dict[str, object], json.loads(description or "{}"))
        partitions = int(cast(int, shape["partitions"]))
    except (ValueError, KeyError, TypeError):
        # A stream made by something else: treat it as a one-partition topic.
        return TopicInfo(topic, 1)
    age = shape.get("max_age")
    count = shape.get("max_count")
    retention = Retention(
        max_age=None if age is None else timedelta(seconds=float(cast(float, age))),
        max_count=None if count is None else int(cast(int, count)),
    )
    return TopicInfo(topic, partitions, retention)
