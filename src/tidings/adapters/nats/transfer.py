"""Copying a topic out of and into JetStream (`tidings.messaging.transfer`).

- A partition is read by stream sequence (offset + 1) with ``STREAM.MSG.GET``, a bounded number
  of requests in flight at a time; sequences purged by retention are simply absent.
- A group's committed offset in a partition is the *ack floor* of its durable consumer there
  (the highest sequence up to which everything is acked): the lowest unsettled offset, else the
  next offset it was never handed. The group's name is read from the consumer's description.
- Appending publishes to the partition's own subject, whatever the key, with the event id as
  ``Nats-Msg-Id``: a copy sent again within the stream's duplicate window is dropped by the
  server (the copier also skips ids the destination already holds, so a copy resumed later
  than the window stores nothing twice either).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Final

import nats.js.errors
from nats.js import api
from nats.js.manager import JetStreamManager

from tidings.adapters.nats import codec
from tidings.adapters.nats.connection import translate_errors
from tidings.adapters.nats.naming import TopicNames
from tidings.adapters.nats.publishing import Outgoing
from tidings.events import Event
from tidings.messaging.ports import TopicInfo
from tidings.messaging.stored import from_cloudevent_json
from tidings.messaging.transfer import StoredMessage

__all__ = ["check_partition", "group_positions", "outgoing", "read_partition"]

_IN_FLIGHT: Final = 128


def check_partition(info: TopicInfo | None, topic: str, partition: int) -> TopicInfo:
    """Return the topic's shape; raise ValueError if it or the partition does not exist."""
    if info is None:
        raise ValueError(f"topic {topic!r} does not exist")
    if not 0 <= partition < info.partitions:
        raise ValueError(f"topic {topic!r} has no partition {partition}")
    return info


async def read_partition(
    jsm: JetStreamManager, info: TopicInfo, partition: int, start: int, limit: int
) -> list[StoredMessage]:
    """Return up to ``limit`` retained messages of a partition at offsets >= ``start``."""
    stream = TopicNames.of(info.name).stream(partition)
    with translate_errors(f"read {info.name!r} partition {partition}"):
        state = (await jsm.stream_info(stream)).state
        first = max(start + 1, state.first_seq)
        found: list[api.RawStreamMsg] = []
        # A window whose every sequence was purged meanwhile (retention, a deleted run) must not
        # read as the end of the partition: move on until something is found or the end passed.
        while not found and first <= state.last_seq:
            last = min(state.last_seq, first + limit - 1)
            for low in range(first, last + 1, _IN_FLIGHT):
                sequences = range(low, min(low + _IN_FLIGHT, last + 1))
                got = await asyncio.gather(*(_message(jsm, stream, seq) for seq in sequences))
                found.extend(message for message in got if message is not None)
            first = last + 1
    return [_stored(partition, message) for message in found[:limit]]


async def _message(jsm: JetStreamManager, stream: str, seq: int) -> api.RawStreamMsg | None:
    try:
        return await jsm.get_msg(stream, seq)
    except nats.js.errors.NotFoundError:
        return None  # purged meanwhile


def _stored(partition: int, message: api.RawStreamMsg) -> StoredMessage:
    headers = message.headers or {}
    key = headers.get(codec.KEY_HEADER)
    offset = (message.seq or 1) - 1
    stored = from_cloudevent_json(partition, offset, key, message.data or b"")
    if stored.event is not None and key is None:
        return StoredMessage(partition, offset, stored.event.partitionkey, stored.event)
    return stored


async def group_positions(jsm: JetStreamManager, info: TopicInfo) -> dict[str, dict[int, int]]:
    """Return each group's committed offset (its consumer's ack floor) per partition."""
    names = TopicNames.of(info.name)
    positions: dict[str, dict[int, int]] = {}
    with translate_errors(f"read the groups of {info.name!r}"):
        for partition in range(info.partitions):
            try:
                consumers = await jsm.consumers_info(names.stream(partition))
            except nats.js.errors.NotFoundError:
                continue
            for consumer in consumers:
                group = _group_of(consumer)
                if group is not None:
                    floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
                    positions.setdefault(group, {})[partition] = floor or 0
    return positions


def _group_of(consumer: api.ConsumerInfo) -> str | None:
    """Return the tidings group a durable consumer belongs to (None: not a group's).

    tidings writes ``{"topic", "group"}`` into every group consumer's description; a durable
    consumer without it was made by someone else (an operator's, a monitor's) and is no group.
    """
    config = consumer.config
    if not config.durable_name:
        return None
    try:
        group = json.loads(config.description or "{}").get("group")
    except (ValueError, AttributeError):
        group = None
    return group if isinstance(group, str) else None


def outgoing(
    info: TopicInfo, partition: int, messages: Sequence[tuple[Event, str | None]]
) -> list[Outgoing]:
    """Return the messages that put each (event, key) in one partition, whatever its key."""
    subject = TopicNames.of(info.name).subject(partition)
    out = []
    for event, key in messages:
        payload, headers = codec.encode(event, key)
        out.append(Outgoing(event.id, partition, subject, payload, headers))
    return out
