"""A group's durable pull consumers: one per partition stream, named after the group.

Each consumer acks explicitly, redelivers after ``ack_wait`` (the subscriber's ack deadline;
the last subscriber to join sets it for the group), never stops redelivering by itself
(``max_deliver=-1``: dead letters are moved by the client, see `tidings.adapters.nats.delivery`)
and has no cap on pending acks (a cap would stall a partition behind events nacked with a
long delay). Its ack floor is the group's durable progress in the partition.

Replay deletes the consumer and creates it again starting at a stream sequence or a time,
because JetStream does not let an existing consumer change where it starts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Final

import nats.js.errors
from nats.js import api
from nats.js.manager import JetStreamManager

from tidings.adapters.nats.connection import translate_errors
from tidings.adapters.nats.naming import GroupNames
from tidings.messaging.ports import StartFrom

__all__ = ["ConsumerStart", "ensure_consumers", "restart_consumer"]

ConsumerStart = StartFrom | int | datetime
"""Where a consumer starts: earliest, latest, a stream sequence (from 1) or a time."""

_DEFAULT_ACK_WAIT: Final = 30.0
_NAME_IN_USE: Final = frozenset({10013, 10148})  # consumer name exists with other settings


async def ensure_consumers(
    jsm: JetStreamManager,
    group: GroupNames,
    partitions: int,
    *,
    ack_wait: float,
    start: StartFrom,
) -> None:
    """Create the group's consumers that are missing; set ``ack_wait`` on those that exist."""
    with translate_errors(f"join group {group.group!r} on {group.topic.topic!r}"):
        for partition in range(partitions):
            await _ensure(jsm, group, partition, ack_wait, start)


async def _ensure(
    jsm: JetStreamManager, group: GroupNames, partition: int, ack_wait: float, start: StartFrom
) -> None:
    stream = group.topic.stream(partition)
    try:
        info = await jsm.consumer_info(stream, group.consumer)
    except nats.js.errors.NotFoundError:
        try:
            await jsm.add_consumer(stream, _config(group, ack_wait, start))
            return
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code not in _NAME_IN_USE:
                raise
            info = await jsm.consumer_info(stream, group.consumer)  # created concurrently
    if info.config.ack_wait != ack_wait:
        info.config.ack_wait = ack_wait
        await jsm.add_consumer(stream, info.config)


async def restart_consumer(
    jsm: JetStreamManager, group: GroupNames, partition: int, start: ConsumerStart
) -> None:
    """Delete a group's consumer on one partition and create it again from ``start``."""
    stream = group.topic.stream(partition)
    with translate_errors(f"replay group {group.group!r} on {group.topic.topic!r}"):
        ack_wait = _DEFAULT_ACK_WAIT
        try:
            info = await jsm.consumer_info(stream, group.consumer)
            ack_wait = info.config.ack_wait or ack_wait
            await jsm.delete_consumer(stream, group.consumer)
        except nats.js.errors.NotFoundError:
            pass
        await jsm.add_consumer(stream, _config(group, ack_wait, start))


def _config(group: GroupNames, ack_wait: float, start: ConsumerStart) -> api.ConsumerConfig:
    config = api.ConsumerConfig(
        durable_name=group.consumer,
        description=json.dumps({"topic": group.topic.topic, "group": group.group}),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=-1,
        replay_policy=api.ReplayPolicy.INSTANT,
    )
    if start is StartFrom.EARLIEST:
        config.deliver_policy = api.DeliverPolicy.ALL
    elif start is StartFrom.LATEST:
        config.deliver_policy = api.DeliverPolicy.NEW
    elif isinstance(start, datetime):
        config.deliver_policy = api.DeliverPolicy.BY_START_TIME
        config.opt_start_time = start
    else:
        config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = max(1, start)
    return config
