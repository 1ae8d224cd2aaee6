"""What the SQLite broker does inside a write transaction for members: join, claim, settle, leave.

Each function runs on the writer thread, inside the group commit's transaction, and is given
the connection and the time in µs; see `tidings.messaging.base` for the model they follow.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Final

import msgspec

from tidings.adapters.sqlite import broker_sql as q
from tidings.adapters.sqlite.broker_ops import append, ensure_group, ensure_topic
from tidings.messaging.base import Claimed, Outgoing
from tidings.messaging.ports import StartFrom, dead_letter_topic

__all__ = ["ClaimRequest", "GroupRef", "ack", "claim", "dead_letter", "extend", "join", "leave"]

_headers_decoder: Final = msgspec.json.Decoder(dict[str, str])


@dataclass(frozen=True, slots=True)
class GroupRef:
    """Where a member's group lives."""

    topic_id: int
    group_id: int
    partitions: int


def join(
    conn: sqlite3.Connection,
    now: int,
    *,
    topic: str,
    group: str,
    member: str,
    start: StartFrom,
    session_us: int,
) -> GroupRef:
    """Create the topic and group as needed, and start the member's session."""
    row = ensure_topic(conn, topic)
    group_id = ensure_group(conn, row, group, start)
    conn.execute(q.UPSERT_MEMBER, (group_id, member, now + session_us))
    return GroupRef(row.topic_id, group_id, row.partitions)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Who claims, how many, under which lease, for how long."""

    ref: GroupRef
    member: str
    limit: int
    lease: int
    deadline_us: int
    session_us: int


def claim(
    conn: sqlite3.Connection, now: int, *, request: ClaimRequest
) -> tuple[list[Claimed], int | None]:
    """Hand the member its deliveries; return them and when the group's next entry is due."""
    ref = request.ref
    conn.execute(q.UPSERT_MEMBER, (ref.group_id, request.member, now + request.session_us))
    alive = conn.execute(q.ALIVE_MEMBERS, (ref.group_id, now)).fetchone()[0]
    share = -(-ref.partitions // max(1, alive))
    mine, free = _holdings(conn, request, now)
    taker = _Taker(conn, request, now)
    used = 0
    for partition in chain(mine, free):
        if used >= share or len(taker.out) >= request.limit:
            break
        took = taker.take(partition, request.limit - len(taker.out))
        used += int(took or partition in mine)
    due = conn.execute(q.NEXT_DUE, (ref.group_id, now)).fetchone()[0]
    return taker.out, due


def _holdings(
    conn: sqlite3.Connection, request: ClaimRequest, now: int
) -> tuple[list[int], list[int]]:
    """Return the partitions the member holds in flight, and those nobody holds (rotated)."""
    rows = conn.execute(q.HOLDERS, (request.ref.group_id, now)).fetchall()
    mine = sorted({p for p, holder in rows if holder == request.member})
    busy = {p for p, holder in rows if holder != request.member}
    count = request.ref.partitions
    start = zlib.crc32(request.member.encode()) % count
    rotated = [(start + i) % count for i in range(count)]
    return mine, [p for p in rotated if p not in busy and p not in mine]


class _Taker:
    """Takes visible entries, then new messages, from one partition after another."""

    def __init__(self, conn: sqlite3.Connection, request: ClaimRequest, now: int) -> None:
        self.conn, self.request, self.now = conn, request, now
        self.until = now + request.deadline_us
        self.out: list[Claimed] = []

    def take(self, partition: int, limit: int) -> bool:
        before = len(self.out)
        self._again(partition, limit)
        if len(self.out) - before < limit:
            self._new(partition, limit - (len(self.out) - before))
        return len(self.out) > before

    def _again(self, partition: int, limit: int) -> None:
        ref, request = self.request.ref, self.request
        params = (ref.topic_id, ref.group_id, partition, self.now, limit)
        rows = self.conn.execute(q.READY, params).fetchall()
        lease = (request.member, request.lease, self.until, ref.group_id, partition)
        self.conn.executemany(q.HAND_AGAIN, [(*lease, row[0]) for row in rows])
        for offset, attempt, key, flags, envelope, headers in rows:
            self._out(partition, offset, attempt + 1, key, flags, envelope, headers)

    def _new(self, partition: int, limit: int) -> None:
        ref, request = self.request.ref, self.request
        cursor = self.conn.execute(q.CURSOR, (ref.group_id, partition)).fetchone()[0]
        params = (ref.topic_id, partition, cursor, limit)
        rows = self.conn.execute(q.NEW_MESSAGES, params).fetchall()
        if not rows:
            return
        held = (self.until, request.member, request.lease)
        entries = [(ref.group_id, partition, row[0], *held) for row in rows]
        self.conn.executemany(q.INSERT_PENDING, entries)
        self.conn.execute(q.SET_CURSOR, (rows[-1][0] + 1, ref.group_id, partition))
        for offset, key, flags, envelope, headers in rows:
            self._out(partition, offset, 1, key, flags, envelope, headers)

    def _out(
        self,
        partition: int,
        offset: int,
        attempt: int,
        key: str | None,
        flags: int,
        envelope: bytes,
        headers: bytes | None,
    ) -> None:
        decoded = None if headers is None else _headers_decoder.decode(headers)
        lease = self.request.lease
        self.out.append(Claimed(partition, offset, key, attempt, lease, envelope, flags, decoded))


# -- settlement -------------------------------------------------------------------------------


def _entry(ref: GroupRef, claimed: Claimed) -> tuple[int, int, int, int]:
    return ref.group_id, claimed.partition, claimed.offset, claimed.lease


def ack(conn: sqlite3.Connection, now: int, *, ref: GroupRef, claimed: Claimed) -> int:
    """Remove the entry if the lease is current; return how many rows changed."""
    return conn.execute(q.ACK, _entry(ref, claimed)).rowcount


def nack(
    conn: sqlite3.Connection, now: int, *, ref: GroupRef, claimed: Claimed, delay_us: int
) -> int:
    """Make the entry visible again after the delay, if the lease is current."""
    return conn.execute(q.NACK, (now + delay_us, *_entry(ref, claimed))).rowcount


def extend(
    conn: sqlite3.Connection, now: int, *, ref: GroupRef, claimed: Claimed, seconds_us: int
) -> int:
    """Move the entry's deadline, if the lease is current."""
    return conn.execute(q.EXTEND, (now + seconds_us, *_entry(ref, claimed))).rowcount


def dead_letter(
    conn: sqlite3.Connection,
    now: int,
    *,
    ref: GroupRef,
    claimed: Claimed,
    topic: str,
    message: Outgoing,
) -> int:
    """Remove the entry and append the message to the topic's dead-letter topic, together."""
    removed = conn.execute(q.ACK, _entry(ref, claimed)).rowcount
    if removed:
        append(
            conn, now, topic=dead_letter_topic(topic), messages=[message], partitions=ref.partitions
        )
    return removed


def leave(
    conn: sqlite3.Connection,
    now: int,
    *,
    ref: GroupRef,
    member: str,
    unyielded: Sequence[Claimed],
) -> None:
    """Release what the member holds (visible now), un-count unseen attempts, end its session."""
    conn.execute(q.RELEASE, (now, ref.group_id, member))
    conn.executemany(q.UNCOUNT, [_entry(ref, claimed) for claimed in unyielded])
    conn.execute(q.DELETE_MEMBER, (ref.group_id, member))
