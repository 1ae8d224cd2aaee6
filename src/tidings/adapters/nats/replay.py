"""Moving a group: JetStream cannot move a consumer, so replay recreates it.

Each moved partition's consumer is deleted and created again starting at the stream sequence
``offset + 1`` (offsets count from 0, sequences from 1) or at the first message stored at or
after a time (``OptStartTime``). Deliveries the group had not settled there are forgotten and
attempts count from 1 again, so the partition's attempt ledger is cleared too; members in this
process drop what they had buffered from the old consumer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from nats.aio.client import Client

from tidings.adapters.nats.attempts import AttemptLedger
from tidings.adapters.nats.connection import translate_errors
from tidings.adapters.nats.consumers import restart_consumer
from tidings.adapters.nats.naming import TopicNames
from tidings.messaging.ports import TopicInfo

__all__ = ["check_replay", "replay_targets", "restart_group"]


def check_replay(offsets: Mapping[int, int] | None, since: datetime | None) -> None:
    """Raise ValueError unless exactly one valid target is given."""
    if (offsets is None) == (since is None):
        raise ValueError("replay needs exactly one of offsets= or since=")
    if offsets is not None and any(o < 0 for o in offsets.values()):
        raise ValueError(f"offsets must be >= 0, got {dict(offsets)}")
    if since is not None and since.utcoffset() is None:
        raise ValueError("since must be a timezone-aware datetime")


def replay_targets(
    info: TopicInfo, offsets: Mapping[int, int] | None, since: datetime | None
) -> dict[int, int | datetime]:
    """Return where each moved partition starts: an offset or a time."""
    targets: dict[int, int | datetime] = dict(offsets) if offsets is not None else {}
    if since is not None:
        targets = dict.fromkeys(range(info.partitions), since)
    for partition in targets:
        if not 0 <= partition < info.partitions:
            raise ValueError(f"topic {info.name!r} has no partition {partition}")
    return targets


async def restart_group(
    nc: Client, info: TopicInfo, group: str, targets: Mapping[int, int | datetime]
) -> None:
    """Recreate a group's consumers on the target partitions and clear their ledgers."""
    names = TopicNames.of(info.name).group(group)
    jsm = nc.jsm()
    for partition, target in targets.items():
        start = target if isinstance(target, datetime) else target + 1
        await restart_consumer(jsm, names, partition, start)
        with translate_errors("replay"):
            await AttemptLedger(nc, names, partition).clear()
