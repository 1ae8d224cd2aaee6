"""The PostgreSQL cases of the event store benchmark: tidings, raw psycopg, eventsourcing.

Every case works in a schema of its own, created in the untimed setup and dropped afterwards,
on the service at `URL` with the server's settings (``synchronous_commit=on``, ``fsync=on``).
The raw tables are tidings' own DDL, so they have the same primary key, unique
``(stream_id, version)`` and partial indexes. Not a benchmark module.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import psycopg
from psycopg import sql

from benchmarks import _eventstore_peer as peer
from benchmarks._eventstore_fixtures import BATCH, batches, events_for, raw_rows
from benchmarks.api import skip_unless_reachable
from tidings.adapters.postgres import sql as q
from tidings.adapters.postgres.eventstore import PostgresEventStore
from tidings.eventstore import NO_STREAM

URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
PER_WRITER: Final = 40
"""Single-event appends per writer in one measured run of the concurrent cases."""

_COLUMNS: Final = (
    "position, stream_id, version, event_id, type, recorded_at_us, flags, envelope,"
    " content_hash, stream_hash, log_hash"
)


def _schema(label: str) -> str:
    return f"bench_{label}_{uuid.uuid4().hex[:10]}"


def create_schema(schema: str, *, tidings_tables: bool) -> None:
    """Create a schema, with tidings' tables in it when asked (untimed)."""
    skip_unless_reachable("127.0.0.1", 5432, service="PostgreSQL")
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for statement in q.ddl(schema) if tidings_tables else ():
            conn.execute(statement)


def drop_schema(schema: str) -> None:
    """Drop a schema and everything in it."""
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _insert(schema: str, columns: str) -> sql.Composed:
    marks = sql.SQL(", ").join(sql.Placeholder() * (columns.count(",") + 1))
    table = sql.Identifier(schema, "tidings_events")
    return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(table, sql.SQL(columns), marks)


# -- batched appends ----------------------------------------------------------------------------


class TidingsBatch:
    """``store.append(stream, 1,000 events, expected_version=NO_STREAM)``, one new stream each."""

    async def setup(self, size: int) -> None:
        skip_unless_reachable("127.0.0.1", 5432, service="PostgreSQL")
        self.events = events_for(size)
        self.schema = _schema("tidings")
        self.store = await PostgresEventStore(URL, schema=self.schema).open()

    async def run(self, size: int) -> None:
        for number, batch in enumerate(batches(self.events)):
            await self.store.append(f"order-{number}", batch, expected_version=NO_STREAM)

    async def teardown(self) -> None:
        await self.store.aclose()
        drop_schema(self.schema)


class RawBatch:
    """psycopg: one transaction per 1,000 rows, ``executemany`` of the positioned rows."""

    def setup(self, size: int) -> None:
        now_us = time.time_ns() // 1000
        self.batches = [
            raw_rows(batch, f"order-{number}", number * BATCH + 1, now_us)
            for number, batch in enumerate(batches(events_for(size)))
        ]
        self.schema = _schema("raw")
        create_schema(self.schema, tidings_tables=True)
        self.insert = _insert(self.schema, _COLUMNS)
        self.conn = psycopg.connect(URL)

    def run(self, size: int) -> None:
        with self.conn.cursor() as cursor:
            for rows in self.batches:
                with self.conn.transaction():
                    cursor.executemany(self.insert, rows)

    def teardown(self) -> None:
        self.conn.close()
        drop_schema(self.schema)


class PeerBatch:
    """eventsourcing.postgres: ``app.save(order)`` of aggregates with 1,000 pending events."""

    def setup(self, size: int) -> None:
        self.schema = _schema("es")
        create_schema(self.schema, tidings_tables=False)
        self.app = peer.postgres_app(self.schema)
        self.orders = peer.new_orders(size // BATCH, BATCH)

    def run(self, size: int) -> None:
        peer.save_each(self.app, self.orders)

    def teardown(self) -> None:
        self.app.close()
        drop_schema(self.schema)


# -- single-event appends from 1, 4, 16 concurrent writers ---------------------------------------


class TidingsSingles:
    """``writers`` asyncio tasks, one event per append to their own stream, exact version.

    The pool gets ``writers + 2`` connections (at least the default 10), so that it does not
    cap the writers: the sequencer and the writers' transactions each need one.
    """

    async def setup(self, writers: int) -> None:
        skip_unless_reachable("127.0.0.1", 5432, service="PostgreSQL")
        events = events_for(writers * PER_WRITER)
        self.per_writer = [events[w::writers] for w in range(writers)]
        self.schema = _schema("tidings")
        size = max(10, writers + 2)
        self.store = await PostgresEventStore(URL, schema=self.schema, max_size=size).open()

    async def run(self, writers: int) -> int:
        await asyncio.gather(*(self._write(w) for w in range(writers)))
        return writers * PER_WRITER

    async def _write(self, writer: int) -> None:
        stream, append = f"writer-{writer}", self.store.append
        for version, event in enumerate(self.per_writer[writer]):
            await append(stream, [event], expected_version=version)

    async def teardown(self) -> None:
        await self.store.aclose()
        drop_schema(self.schema)


class RawSingles:
    """psycopg: ``writers`` async connections, one autocommit INSERT of one row per event.

    The rows go in unpositioned, as tidings' append transaction writes them, with no stream
    check and no sequencing: the floor of a durable single-event write.
    """

    async def setup(self, writers: int) -> None:
        self.schema = _schema("raw")
        create_schema(self.schema, tidings_tables=True)
        columns = _COLUMNS.replace("position, ", "").replace(", log_hash", "")
        self.insert = _insert(self.schema, columns)
        now_us = time.time_ns() // 1000
        events = events_for(writers * PER_WRITER)
        self.per_writer = [
            [row[1:-1] for row in raw_rows(events[w::writers], f"writer-{w}", 1, now_us)]
            for w in range(writers)
        ]
        self.conns = [
            await psycopg.AsyncConnection.connect(URL, autocommit=True) for _ in range(writers)
        ]

    async def run(self, writers: int) -> int:
        await asyncio.gather(*(self._write(w) for w in range(writers)))
        return writers * PER_WRITER

    async def _write(self, writer: int) -> None:
        conn = self.conns[writer]
        for row in self.per_writer[writer]:
            await conn.execute(self.insert, row)

    async def teardown(self) -> None:
        for conn in self.conns:
            await conn.close()
        drop_schema(self.schema)


class PeerSingles:
    """eventsourcing.postgres: ``writers`` threads (it is sync), one event per ``save``."""

    def setup(self, writers: int) -> None:
        self.schema = _schema("es")
        create_schema(self.schema, tidings_tables=False)
        self.app = peer.postgres_app(self.schema, pool_size=writers)
        self.per_writer: list[list[Any]] = []
        for order in peer.new_orders(writers, PER_WRITER + 1):
            created, *placed = order.collect_events()
            self.app.save(created)  # untimed: the aggregate exists
            self.per_writer.append(placed)
        self.pool = ThreadPoolExecutor(writers)
        list(self.pool.map(time.sleep, [0.01] * writers))

    def run(self, writers: int) -> int:
        save = self.app.save
        jobs = [self.pool.submit(lambda evs=evs: [save(e) for e in evs]) for evs in self.per_writer]
        for job in jobs:
            job.result()
        return writers * PER_WRITER

    def teardown(self) -> None:
        self.pool.shutdown()
        self.app.close()
        drop_schema(self.schema)
