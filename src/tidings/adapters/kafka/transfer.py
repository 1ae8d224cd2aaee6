"""`TopicTransfer` on Kafka: reading partitions out, group positions, appending in place.

Partitions are read with an assigned consumer (`tidings.adapters.kafka.reading`), so reading
joins no group and commits nothing. A group's position is its committed offset, which the
member keeps at its lowest unsettled offset; the delivery ledgers (``*.tidings-delivered``)
and the retention floors (``__tidings_retention``) are bookkeeping, not groups, and are left
out (a tidings group name cannot start with ``_``). Kafka has no "groups of a topic" query: every
group's offsets are asked for, concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final

from confluent_kafka import Message

from tidings.adapters.kafka.admin import Admin
from tidings.adapters.kafka.codec import read_headers
from tidings.adapters.kafka.member import LEDGER_SUFFIX
from tidings.eventstore.records import decode_event
from tidings.messaging.transfer import StoredMessage

__all__ = ["group_positions", "stored_message"]

_CONCURRENT: Final = 16


def stored_message(message: Message) -> StoredMessage:
    """Return a fetched record as a `StoredMessage` (an undecodable payload comes back raw)."""
    flags, _ = read_headers(message.headers())  # type: ignore[arg-type]
    raw = bytes(message.value() or b"")
    key = message.key()
    text_key = None if key is None else bytes(key).decode(errors="replace")
    partition, offset = message.partition() or 0, message.offset() or 0
    try:
        event = decode_event(raw, flags)
    except Exception:  # whatever the payload is, it is handed back raw
        return StoredMessage(partition, offset, text_key, None, raw)
    return StoredMessage(partition, offset, text_key, event)


async def group_positions(
    admin: Admin, topic: str, partitions: int
) -> Mapping[str, Mapping[int, int]]:
    """Return each group's committed offset per partition of a topic."""
    groups = [
        g for g in await admin.groups() if not g.endswith(LEDGER_SUFFIX) and not g.startswith("__")
    ]
    limit = asyncio.Semaphore(_CONCURRENT)

    async def offsets(group: str) -> tuple[str, dict[int, int]]:
        async with limit:
            return group, await admin.group_offsets(group, topic, partitions)

    found = await asyncio.gather(*(offsets(group) for group in groups))
    return {group: positions for group, positions in found if positions}
