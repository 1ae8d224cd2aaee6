"""Publishing on PostgreSQL: many messages, several topics, one transaction, dense offsets.

`write` stores a batch of placed messages (each already given its topic and partition) in one
transaction of two statements sent together: lock the partitions' rows in a fixed order, then
move each head by its count and insert every row at ``base + index``. The row lock is held
until COMMIT, so a concurrent publisher to that partition waits and then starts from the new
head: a partition's offsets become visible in order and without holes, so a consumer that read
offset n never later finds a new row below n (no late commit is skipped), and nothing is ever
skipped on a timer.

Idempotence by event id: ids repeated within the batch are stored once; an id already stored
makes the unique index fail the transaction, which is then done again without the ids found
stored (they are reported as duplicates with their stored place).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final, NamedTuple

import msgspec
from psycopg import AsyncConnection, errors
from psycopg.rows import TupleRow

from tidings.adapters.postgres.broker_sql import BrokerStatements
from tidings.messaging.base import Outgoing
from tidings.messaging.ports import PublishResult, Retention, TopicInfo

__all__ = ["Placed", "TopicRow", "write"]

Conn = AsyncConnection[TupleRow]
_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class TopicRow:
    """A topic as stored (its shape never changes once created)."""

    topic_id: int
    partitions: int
    max_age_us: int | None
    max_count: int | None

    def info(self, name: str) -> TopicInfo:
        """Return the public shape of the topic."""
        age = None if self.max_age_us is None else timedelta(microseconds=self.max_age_us)
        return TopicInfo(name, self.partitions, Retention(max_age=age, max_count=self.max_count))


class Placed(NamedTuple):
    """A message with the topic and partition it goes to."""

    topic_id: int
    partition: int
    message: Outgoing


_Slot = PublishResult | tuple[int, int, int, str] | int
"""Where a message landed: stored before, (topic, partition, index, id), or -(earlier slot)-1."""


@dataclass(slots=True)
class _Rows:
    """The messages of one append statement, their index in their partition, their slots."""

    counts: dict[tuple[int, int], int] = field(default_factory=dict)
    placed: list[Placed] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    slots: list[_Slot] = field(default_factory=list)

    def add(self, placed: Placed) -> None:
        topic_id, partition, message = placed
        index = self.counts.get((topic_id, partition), 0)
        self.counts[(topic_id, partition)] = index + 1
        self.placed.append(placed)
        self.indexes.append(index)
        self.slots.append((topic_id, partition, index, message.event_id or ""))

    def params(self) -> tuple[object, ...]:
        """Return the statement's parameters: heads to move, then the rows' columns.

        Integer columns go as array literals, and a column of NULLs as an empty array
        (``unnest`` pads it), which is cheaper than adapting a list item by item.
        """
        heads = list(self.counts.items())
        messages = [placed.message for placed in self.placed]
        headers = [None if not m.headers else msgspec.json.encode(m.headers) for m in messages]
        return (
            _literal([t for (t, _), _ in heads]),
            _literal([p for (_, p), _ in heads]),
            _literal([n for _, n in heads]),
            _literal([placed.topic_id for placed in self.placed]),
            _literal([placed.partition for placed in self.placed]),
            _literal(self.indexes),
            [m.event_id for m in messages],
            _or_empty([m.key for m in messages]),
            _literal([m.flags for m in messages]),
            [m.envelope for m in messages],
            _or_empty(headers),
        )


def _literal(values: Sequence[object]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def _or_empty(values: Sequence[object]) -> Sequence[object] | str:
    return "{}" if all(value is None for value in values) else values


async def write(
    conn: Conn, s: BrokerStatements, placed: Sequence[Placed], channel: str
) -> list[PublishResult]:
    """Store the messages in order, skipping event ids already stored; return their places."""
    stored: dict[tuple[int, str], PublishResult] = {}
    for _ in range(_ATTEMPTS):
        rows = _rows(placed, stored)
        if not rows.counts:
            return _results(rows, {})
        try:
            return _results(rows, await _append(conn, s, rows, channel))
        except errors.UniqueViolation:  # an id was stored before: look every id up
            stored = await _stored(conn, s, placed)
    raise errors.UniqueViolation("event ids kept colliding with concurrent publishes")


def _rows(placed: Sequence[Placed], stored: dict[tuple[int, str], PublishResult]) -> _Rows:
    rows = _Rows()
    seen: dict[tuple[int, str], int] = {}
    for item in placed:
        event_id = item.message.event_id
        if event_id is not None:
            known = stored.get((item.topic_id, event_id))
            if known is not None:
                rows.slots.append(known)
                continue
            first = seen.get((item.topic_id, event_id))
            if first is not None:
                rows.slots.append(-first - 1)  # a repeat of slot `first`
                continue
            seen[(item.topic_id, event_id)] = len(rows.slots)
        rows.add(item)
    return rows


async def _append(
    conn: Conn, s: BrokerStatements, rows: _Rows, channel: str
) -> dict[tuple[int, int], int]:
    params = rows.params()
    async with conn.pipeline(), conn.transaction():
        await conn.execute(s.lock_heads, (params[0], params[1]))
        appended = await conn.execute(s.append, params)
        await conn.execute(s.notify, (channel,))
    return {(t, p): base for t, p, base in await appended.fetchall()}


async def _stored(
    conn: Conn, s: BrokerStatements, placed: Sequence[Placed]
) -> dict[tuple[int, str], PublishResult]:
    ids = [(p.topic_id, p.message.event_id) for p in placed if p.message.event_id is not None]
    cursor = await conn.execute(s.stored_ids, ([t for t, _ in ids], [e for _, e in ids]))
    return {
        (topic_id, event_id): PublishResult(event_id, partition, offset, duplicate=True)
        for topic_id, event_id, partition, offset in await cursor.fetchall()
    }


def _results(rows: _Rows, bases: dict[tuple[int, int], int]) -> list[PublishResult]:
    out: list[PublishResult] = []
    for slot in rows.slots:
        if isinstance(slot, PublishResult):
            out.append(slot)
        elif isinstance(slot, int):  # a repeat of an earlier message of the batch
            first = out[-slot - 1]
            out.append(PublishResult(first.event_id, first.partition, first.offset, True))
        else:
            topic_id, partition, index, event_id = slot
            out.append(PublishResult(event_id, partition, bases[(topic_id, partition)] + index))
    return out
