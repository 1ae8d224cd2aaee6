"""What the PostgreSQL broker does for members: join, claim, dead-letter, leave.

A claim is one call of the ``tidings_broker_claim`` function (created with the tables), so it
costs one round trip and one commit: it locks the group's row (claims of one group are
serialised; settlements are not), renews the member's session, counts the live members, and
then, partition by partition (those the member holds in flight, then those nobody holds,
starting at a place given by the member's id, up to its fair share, see
`tidings.messaging.base`), hands visible entries again and takes new messages from the cursor.
Its last row carries the server's time and when the group's next entry is due. Deadlines are
server times, so every process agrees on them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from tidings.adapters.postgres.broker_settle import Settlement, apply, array_literal
from tidings.adapters.postgres.broker_sql import BrokerStatements
from tidings.messaging.base import Claimed
from tidings.messaging.ports import StartFrom

__all__ = ["ClaimRequest", "GroupRef", "claim", "ensure_group", "leave"]

Conn = AsyncConnection[TupleRow]
_headers_decoder: Final = msgspec.json.Decoder(dict[str, str])


@dataclass(frozen=True, slots=True)
class GroupRef:
    """Where a member's group lives."""

    topic_id: int
    group_id: int
    partitions: int


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Who claims, how many, under which lease, for how long (µs)."""

    ref: GroupRef
    member: str
    limit: int
    lease: int
    deadline_us: int
    session_us: int


async def ensure_group(
    conn: Conn, s: BrokerStatements, topic_id: int, name: str, start: StartFrom
) -> int:
    """Return the group's id, creating it with cursors at the start when missing."""
    async with conn.transaction():
        cursor = await conn.execute(s.create_group, (topic_id, name))
        row = await cursor.fetchone()
        if row is not None:
            latest = start is StartFrom.LATEST
            await conn.execute(s.insert_cursors, (row[0], latest, topic_id))
            return int(row[0])
    cursor = await conn.execute(s.group, (topic_id, name))
    found = await cursor.fetchone()
    assert found is not None, "a group is never deleted"
    return int(found[0])


async def claim(
    conn: Conn, s: BrokerStatements, request: ClaimRequest, settle: Sequence[Settlement] = ()
) -> tuple[list[Claimed], int, int | None]:
    """Hand the member its deliveries; return them, the server's now and the next due time.

    ``settle``: queued settlements of the group to commit first, in the same transaction
    (one commit for a consumer's acks and its next claim), after the group's lock, so the
    locks are taken in the order a replay takes them.
    """
    ref = request.ref
    start = zlib.crc32(request.member.encode()) % ref.partitions
    acks = [item for item in settle if item.kind == "ack"]
    params = (
        *(ref.group_id, ref.topic_id, ref.partitions, request.member, request.limit),
        *(request.lease, request.deadline_us, request.session_us, start),
        *(array_literal([a.partition for a in acks]), array_literal([a.offset for a in acks])),
        array_literal([a.lease for a in acks]),
    )
    if len(acks) < len(settle):  # nacks or extends too: the group's lock first, as always
        async with conn.pipeline(), conn.transaction():
            await conn.execute(s.lock_group, (ref.group_id,))
            await apply(conn, s, [item for item in settle if item.kind != "ack"])
            cursor = await conn.execute(s.claim, params, binary=True)
    else:  # one statement: the acks (after the group's lock) and the claim
        cursor = await conn.execute(s.claim, params, binary=True)
    rows = await cursor.fetchall()
    *taken, (_, _, _, _, _, _, _, now, due) = rows
    first_seen = {row[0]: index for index, row in reversed(list(enumerate(taken)))}
    taken.sort(key=lambda row: (first_seen[row[0]], row[1]))  # entries again come first
    return [_claimed(row, request.lease) for row in taken], now, due


def _claimed(row: TupleRow, lease: int) -> Claimed:
    partition, offset, attempt, key, flags, envelope, headers, *_ = row
    decoded = None if headers is None else _headers_decoder.decode(headers)
    return Claimed(partition, offset, key, attempt, lease, envelope, flags, decoded)


async def leave(
    conn: Conn, s: BrokerStatements, ref: GroupRef, member: str, unyielded: Sequence[Claimed]
) -> None:
    """Release what the member holds (visible now), un-count unseen attempts, end its session."""
    async with conn.pipeline(), conn.transaction():
        await conn.execute(s.release, (ref.group_id, member))
        if unyielded:
            parts = [c.partition for c in unyielded]
            offsets = [c.offset for c in unyielded]
            leases = [c.lease for c in unyielded]
            await conn.execute(s.uncount, (parts, offsets, leases, ref.group_id))
        await conn.execute(s.delete_member, (ref.group_id, member))
