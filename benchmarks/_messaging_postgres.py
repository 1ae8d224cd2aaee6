"""PostgreSQL cases of the messaging benchmark: `PostgresBroker` against raw psycopg doing the
same inserts, claims and deletes on the same tables.

Every case uses a fresh schema on the server at 127.0.0.1:5432 (database ``test``), dropped
afterwards, a one-partition topic, and the typical event of the envelope benchmark:

- ``postgres-publish/*``: N events in calls of 1,000, each call returning once committed.
  ``raw``: encode each event (msgspec) and, in one pipelined transaction per 1,000, lock the
  partition's row, move its head and insert the rows at their offsets (``unnest`` arrays, ids
  and envelopes sent in binary, as the broker sends them);
  ``tidings``: ``publish(topic, batch)``.
- ``postgres-consume/*``: N stored events consumed and acked by a new group, 64 at a time.
  ``raw``: per 64, in one transaction, select the next messages from the cursor, insert their
  pending rows and move the cursor (one statement); decode each envelope into an `Event`; then
  delete the 64 pending rows (the acks) in one statement. ``tidings``:
  ``subscribe(prefetch=64)`` + ``ack()`` of every delivery, one at a time.
"""

from __future__ import annotations

import uuid
from typing import Final

import msgspec

from benchmarks._envelope_fixtures import PAYLOAD, make_event
from benchmarks.api import Case, skip_unless_reachable
from tidings.adapters.postgres.broker import PostgresBroker
from tidings.events import Event

__all__ = ["PACKAGES", "postgres_cases"]

PACKAGES: Final = ("psycopg", "psycopg-pool")
URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
BATCH: Final = 1_000
FETCH: Final = 64
TOPIC: Final = "bench"
_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Event)

_CLAIM: Final = """
    WITH fresh AS (
        SELECT msg_offset, envelope FROM {s}.tidings_broker_messages
        WHERE topic_id = %s AND partition = 0 AND msg_offset >= %s
        ORDER BY msg_offset LIMIT %s),
    held AS (
        INSERT INTO {s}.tidings_broker_pending
            (group_id, partition, msg_offset, attempt, visible_at_us, holder, lease)
        SELECT %s, 0, msg_offset, 1, 0, 'm', 7 FROM fresh),
    moved AS (
        UPDATE {s}.tidings_broker_cursors SET next_offset = (SELECT MAX(msg_offset) + 1 FROM fresh)
        WHERE group_id = %s AND partition = 0)
    SELECT msg_offset, envelope FROM fresh ORDER BY msg_offset"""
_ACK: Final = """
    DELETE FROM {s}.tidings_broker_pending
    WHERE group_id = %s AND partition = 0 AND msg_offset = ANY(%s) AND lease = 7"""
_LOCK: Final = """
    SELECT head FROM {s}.tidings_broker_partitions
    WHERE topic_id = %s AND partition = 0 FOR UPDATE"""
_MOVE: Final = """
    UPDATE {s}.tidings_broker_partitions SET head = head + %s
    WHERE topic_id = %s AND partition = 0"""
_INSERT: Final = """
    INSERT INTO {s}.tidings_broker_messages
        (topic_id, partition, msg_offset, event_id, flags, envelope, published_at_us)
    SELECT %s, 0, o, i, 0, e, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
    FROM unnest(%s::bigint[], %b::text[], %b::bytea[]) AS m(o, i, e)"""


class _Schema:
    """A fresh schema with a one-partition topic per run, dropped afterwards."""

    async def setup(self, size: int) -> None:
        skip_unless_reachable("127.0.0.1", 5432, service="PostgreSQL")
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        self.broker = await PostgresBroker(URL, schema=self.schema).open()
        info = await self.broker.create_topic(TOPIC, partitions=1)
        self.topic_id = self.broker._topics[info.name].topic_id
        self.events = [make_event(PAYLOAD) for _ in range(size)]

    async def fill(self) -> None:
        for start in range(0, len(self.events), BATCH):
            await self.broker.publish(TOPIC, self.events[start : start + BATCH])

    def sql(self, template: str) -> bytes:
        return template.replace("{s}", f'"{self.schema}"').encode()

    async def teardown(self) -> None:
        import psycopg

        await self.broker.aclose()
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
            await conn.execute(self.sql("DROP SCHEMA {s} CASCADE"))


class RawPublish(_Schema):
    """psycopg: encode and insert the same rows under the partition's row lock, per 1,000."""

    async def setup(self, size: int) -> None:
        await super().setup(size)
        import psycopg

        self.conn = await psycopg.AsyncConnection.connect(URL, autocommit=True)
        self.lock, self.move, self.insert = map(self.sql, (_LOCK, _MOVE, _INSERT))

    async def run(self, size: int) -> None:
        conn, head = self.conn, 0
        for start in range(0, size, BATCH):
            batch = self.events[start : start + BATCH]
            ids, envelopes = [e.id for e in batch], [_encoder.encode(e) for e in batch]
            offsets = list(range(head, head + len(batch)))
            async with conn.pipeline(), conn.transaction():
                await conn.execute(self.lock, (self.topic_id,))
                await conn.execute(self.move, (len(batch), self.topic_id))
                await conn.execute(self.insert, (self.topic_id, offsets, ids, envelopes))
            head += len(batch)

    async def teardown(self) -> None:
        await self.conn.close()
        await super().teardown()


class TidingsPublish(_Schema):
    """PostgresBroker.publish(topic, 1,000 events) until N are stored."""

    async def run(self, size: int) -> None:
        await self.fill()


class RawConsume(_Schema):
    """psycopg: claim 64 (select, pending rows, cursor: one statement), decode, delete them."""

    async def setup(self, size: int) -> None:
        await super().setup(size)
        await self.fill()
        import psycopg

        self.conn = await psycopg.AsyncConnection.connect(URL, autocommit=True)
        group = self.sql(
            "INSERT INTO {s}.tidings_broker_groups (topic_id, name) VALUES (%s, 'raw')"
            " RETURNING group_id"
        )
        self.group_id = (await (await self.conn.execute(group, (self.topic_id,))).fetchall())[0][0]
        cursor = self.sql("INSERT INTO {s}.tidings_broker_cursors VALUES (%s, 0, 0)")
        await self.conn.execute(cursor, (self.group_id,))
        self.claim, self.ack = self.sql(_CLAIM), self.sql(_ACK)

    async def run(self, size: int) -> None:
        conn, done = self.conn, 0
        while done < size:
            params = (self.topic_id, done, FETCH, self.group_id, self.group_id)
            async with conn.transaction():
                rows = await (await conn.execute(self.claim, params)).fetchall()
            for _, envelope in rows:
                _decoder.decode(envelope)
            await conn.execute(self.ack, (self.group_id, [offset for offset, _ in rows]))
            done += len(rows)

    async def teardown(self) -> None:
        await self.conn.close()
        await super().teardown()


class TidingsConsume(_Schema):
    """PostgresBroker.subscribe(prefetch=64) and ack every delivery, one at a time."""

    async def setup(self, size: int) -> None:
        await super().setup(size)
        await self.fill()
        self.sub = self.broker.subscribe(TOPIC, group="tidings", prefetch=FETCH)
        await self.sub.join()  # joining and leaving are not timed, as for the raw consumer

    async def run(self, size: int) -> None:
        done = 0
        async for delivery in self.sub:
            await delivery.ack()
            done += 1
            if done == size:
                break
        await self.broker._settlements.drain()  # every ack committed, as the raw one's

    async def teardown(self) -> None:
        await self.sub.aclose()
        await super().teardown()


def postgres_cases(*, size: int = 20_000) -> list[Case]:
    """Return the PostgreSQL cases, ready to append to the messaging module's ``CASES``."""

    def case(name: str, state: _Schema, **options: object) -> Case:
        doc = (type(state).__doc__ or "").strip().splitlines()[0]
        return Case(
            name=name,
            run=state.run,  # type: ignore[attr-defined]
            setup=state.setup,
            teardown=state.teardown,
            size=size,
            unit="events/s",
            description=doc,
            **options,  # type: ignore[arg-type]
        )

    return [
        case("postgres-publish/raw", RawPublish()),
        case("postgres-publish/tidings", TidingsPublish(), baseline="postgres-publish/raw"),
        case("postgres-consume/raw", RawConsume()),
        case("postgres-consume/tidings", TidingsConsume(), baseline="postgres-consume/raw"),
    ]
