"""What the PostgreSQL broker does for members: join, claim, dead-letter, leave.

A claim is one transaction of at most two round trips. First (sent together): lock the
group's row (claims of one group are serialised; settlements are not), renew the member's
session, and read the number of live members, who holds which partition in flight, each
partition's backlog (new messages, entries visible again) and when the group's next entry is
due. Then, for the partitions the member may take (those it holds, then free ones, up to its
fair share, see `tidings.messaging.base`), hand visible entries again and take new messages
from the cursors, in one statement each. Deadlines are server times.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Final

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from tidings.adapters.postgres.broker_sql import BrokerStatements
from tidings.messaging.base import Claimed
from tidings.messaging.ports import StartFrom

__all__ = ["ClaimRequest", "GroupRef", "claim", "ensure_group", "leave", "plan"]

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


def plan(
    request: ClaimRequest,
    alive: int,
    holders: Iterable[tuple[int, str]],
    backlog: Mapping[int, tuple[int, int]],
) -> list[tuple[int, int, int]]:
    """Return (partition, entries again, new messages) to take, in the order to take them.

    ``backlog`` maps a partition to (new messages, entries visible again).
    """
    count = request.ref.partitions
    share = -(-count // max(1, alive))
    held = list(holders)
    mine = sorted({p for p, holder in held if holder == request.member})
    busy = {p for p, holder in held if holder != request.member}
    start = zlib.crc32(request.member.encode()) % count
    free = [p for p in ((start + i) % count for i in range(count)) if p not in busy | set(mine)]
    room, used, out = request.limit, 0, []
    for partition in chain(mine, free):
        if used >= share or room <= 0:
            break
        new, ready = backlog.get(partition, (0, 0))
        again = min(ready, room)
        fresh = min(max(new, 0), room - again)
        if again or fresh:
            out.append((partition, again, fresh))
            room -= again + fresh
        used += int(bool(again or fresh) or partition in mine)
    return out


async def claim(
    conn: Conn, s: BrokerStatements, request: ClaimRequest
) -> tuple[list[Claimed], int, int | None]:
    """Hand the member its deliveries; return them, the server's now and the next due time."""
    ref = request.ref
    async with conn.pipeline(), conn.transaction():
        now_cursor = await conn.execute(s.lock_group, (ref.group_id,))
        await conn.execute(s.upsert_member, (ref.group_id, request.member, request.session_us))
        alive_cursor = await conn.execute(s.alive_members, (ref.group_id,))
        holders_cursor = await conn.execute(s.holders, (ref.group_id,))
        backlog_cursor = await conn.execute(s.backlog, (ref.topic_id, ref.group_id))
        due_cursor = await conn.execute(s.next_due, (ref.group_id,))
        now = (await _one(now_cursor))[0]
        alive = (await _one(alive_cursor))[0]
        holders = [(p, h) for p, h in await holders_cursor.fetchall()]
        backlog = {p: (new, ready) for p, new, ready in await backlog_cursor.fetchall()}
        due = (await _one(due_cursor))[0]
        chosen = plan(request, alive, holders, backlog)
        if not chosen:
            return [], now, due
        rows = await _take(conn, s, request, chosen, now)
    order = {p: i for i, (p, _, _) in enumerate(chosen)}
    rows.sort(key=lambda row: (order[row[0]], row[1]))  # entries again come first
    return [_claimed(row, request.lease) for row in rows], now, due


async def _take(
    conn: Conn,
    s: BrokerStatements,
    request: ClaimRequest,
    chosen: Sequence[tuple[int, int, int]],
    now: int,
) -> list[TupleRow]:
    ref, until = request.ref, now + request.deadline_us
    lease = (request.member, request.lease)
    again = [(p, k) for p, k, _ in chosen if k]
    fresh = [(p, k) for p, _, k in chosen if k]
    cursors = []
    if again:
        parts, counts = [p for p, _ in again], [k for _, k in again]
        again_params = (*lease, until, parts, counts, ref.group_id, now, ref.group_id, ref.topic_id)
        cursors.append(await conn.execute(s.hand_again, again_params))
    if fresh:
        parts, counts = [p for p, _ in fresh], [k for _, k in fresh]
        held = (ref.group_id, until, *lease, ref.group_id)
        params = (parts, counts, ref.topic_id, ref.group_id, *held)
        cursors.append(await conn.execute(s.take_new, params))
    return [row for cursor in cursors for row in await cursor.fetchall()]


def _claimed(row: TupleRow, lease: int) -> Claimed:
    partition, offset, attempt, key, flags, envelope, headers = row
    decoded = None if headers is None else _headers_decoder.decode(headers)
    return Claimed(partition, offset, key, attempt, lease, envelope, flags, decoded)


async def _one(cursor: object) -> TupleRow:
    row = await cursor.fetchone()  # type: ignore[attr-defined]
    assert row is not None
    return row  # type: ignore[no-any-return]


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
