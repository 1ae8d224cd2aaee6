"""The SQLite cases of the event store benchmark: tidings, the raw driver, eventsourcing.

Every writing case opens a new database file on disk (ext4, not tmpfs) in its untimed setup,
with WAL and ``synchronous=FULL`` (tidings' default; eventsourcing's too, checked at setup),
and deletes it afterwards. Not a benchmark module: `benchmarks.eventstore` declares the cases.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import msgspec

from benchmarks import _eventstore_peer as peer
from benchmarks._eventstore_fixtures import (
    BATCH,
    RAW_INSERT,
    RAW_PAGE,
    RAW_SELECT,
    batches,
    create_raw_table,
    events_for,
    fresh_path,
    raw_rows,
    read_raw_pages,
    shared_log,
    sqlite_connect,
)
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.eventstore import NO_STREAM

WRITERS: Final = 16
"""Concurrent writers in the single-event append cases."""
PAGE: Final = peer.PAGE
"""Events per read_all call: the page size of eventsourcing's reads too."""


def remove_database(path: Path) -> None:
    """Delete a database file and its WAL companions."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- batched appends: 1,000 events per append, one stream each ---------------------------------


class TidingsBatch:
    """``store.append(stream, 1,000 events, expected_version=NO_STREAM)``, one new stream each."""

    async def setup(self, size: int) -> None:
        self.events = events_for(size)
        self.path = fresh_path("tidings-batch")
        self.store = await SQLiteEventStore(self.path).open()

    async def run(self, size: int) -> None:
        for number, batch in enumerate(batches(self.events)):
            await self.store.append(f"order-{number}", batch, expected_version=NO_STREAM)

    async def teardown(self) -> None:
        await self.store.aclose()
        remove_database(self.path)


class RawBatch:
    """sqlite3: BEGIN IMMEDIATE, ``executemany`` of tidings' rows, COMMIT; 1,000 rows each."""

    def __init__(self, *, type_index: bool = True) -> None:
        self.type_index = type_index

    def setup(self, size: int) -> None:
        events = events_for(size)
        now_us = time.time_ns() // 1000
        self.batches = [
            raw_rows(batch, f"order-{number}", number * BATCH + 1, now_us)
            for number, batch in enumerate(batches(events))
        ]
        self.path = fresh_path("raw-batch")
        self.conn = sqlite_connect(self.path)
        create_raw_table(self.conn, type_index=self.type_index)

    def run(self, size: int) -> None:
        conn = self.conn
        for rows in self.batches:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(RAW_INSERT, rows)
            conn.execute("COMMIT")

    def teardown(self) -> None:
        self.conn.close()
        remove_database(self.path)


class PeerBatch:
    """eventsourcing: ``app.save(order)`` of aggregates holding 1,000 pending events each."""

    def setup(self, size: int) -> None:
        self.path = fresh_path("es-batch")
        self.app = peer.sqlite_app(self.path)
        self.orders = peer.new_orders(size // BATCH, BATCH)

    def run(self, size: int) -> None:
        peer.save_each(self.app, self.orders)

    def teardown(self) -> None:
        self.app.close()
        remove_database(self.path)


# -- single-event appends from 16 concurrent writers, durable -----------------------------------


class TidingsSingles:
    """16 asyncio tasks, each appending one event at a time to its own stream, exact version."""

    async def setup(self, size: int) -> None:
        events = events_for(size)
        self.per_writer = [events[w::WRITERS] for w in range(WRITERS)]
        self.path = fresh_path("tidings-singles")
        self.store = await SQLiteEventStore(self.path).open()

    async def run(self, size: int) -> int:
        await asyncio.gather(*(self._write(w) for w in range(WRITERS)))
        return sum(map(len, self.per_writer))

    async def _write(self, writer: int) -> None:
        stream, append = f"writer-{writer}", self.store.append
        for version, event in enumerate(self.per_writer[writer]):
            await append(stream, [event], expected_version=version)

    async def teardown(self) -> None:
        await self.store.aclose()
        remove_database(self.path)


class RawSingles:
    """sqlite3, one connection: BEGIN IMMEDIATE, INSERT one row, COMMIT, per event."""

    def setup(self, size: int) -> None:
        now_us = time.time_ns() // 1000
        self.rows = [  # the writers' events interleaved, positions in commit order
            raw_rows([e], f"writer-{i % WRITERS}", i + 1, now_us, first_version=i // WRITERS + 1)[0]
            for i, e in enumerate(events_for(size))
        ]
        self.path = fresh_path("raw-singles")
        self.conn = sqlite_connect(self.path)
        create_raw_table(self.conn)

    def run(self, size: int) -> int:
        conn = self.conn
        for row in self.rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(RAW_INSERT, row)
            conn.execute("COMMIT")
        return len(self.rows)

    def teardown(self) -> None:
        self.conn.close()
        remove_database(self.path)


class PeerSingles:
    """eventsourcing: 16 threads, each saving one event at a time of its own aggregate."""

    def setup(self, size: int) -> None:
        self.path = fresh_path("es-singles")
        self.app = peer.sqlite_app(self.path)
        self.per_writer: list[list[Any]] = []
        for order in peer.new_orders(WRITERS, size // WRITERS + 1):
            created, *placed = order.collect_events()
            self.app.save(created)  # untimed: the stream exists, as tidings' streams do not
            self.per_writer.append(placed)
        self.pool = ThreadPoolExecutor(WRITERS)
        list(self.pool.map(time.sleep, [0.01] * WRITERS))  # start the threads, untimed

    def run(self, size: int) -> int:
        save = self.app.save
        jobs = [self.pool.submit(lambda evs=evs: [save(e) for e in evs]) for evs in self.per_writer]
        for job in jobs:
            job.result()
        return sum(map(len, self.per_writer))

    def teardown(self) -> None:
        self.pool.shutdown()
        self.app.close()
        remove_database(self.path)


# -- reading the log --------------------------------------------------------------------------


class TidingsRead:
    """Reads the first ``size`` events of the shared log: ``read_all`` pages or ``subscribe``.

    ``read_all(after_position=p, limit=1,000)`` page after page, each page dropped before the
    next, as a consumer pages through the log (and as eventsourcing's notifications are read).
    """

    def __init__(self, *, subscribe: bool) -> None:
        self.subscribe = subscribe

    async def setup(self, size: int) -> None:
        self.store = await SQLiteEventStore(await shared_log.ensure(size)).open()

    async def run(self, size: int) -> int:
        if not self.subscribe:
            return await self._read_pages(size)
        count = 0
        async for record in self.store.subscribe():
            count += 1
            if record.position >= size:
                break
        return count

    async def _read_pages(self, size: int) -> int:
        after, count = 0, 0
        while after < size:
            page = await self.store.read_all(after_position=after, limit=min(PAGE, size - after))
            if not page:
                break
            count += len(page)
            after = page[-1].position
        return count

    async def teardown(self) -> None:
        await self.store.aclose()


class RawRead:
    """sqlite3: keyset pages of 10,000 rows of the read columns, ``fetchall``; optional decode."""

    def __init__(self, *, decode: bool) -> None:
        self.decode = decode
        self.decoder = msgspec.json.Decoder()

    def setup(self, size: int) -> None:
        self.conn = sqlite3.connect(shared_log.ensure_sync(size), check_same_thread=False)

    def run(self, size: int) -> int:
        if not self.decode:
            return read_raw_pages(self.conn, size)
        decode, after, count = self.decoder.decode, 0, 0
        while after < size:
            rows = self.conn.execute(RAW_SELECT, (after, size, RAW_PAGE)).fetchall()
            if not rows:
                break
            for row in rows:
                decode(row[5])
            count += len(rows)
            after = rows[-1][0]
        return count

    def teardown(self) -> None:
        self.conn.close()


class PeerRead:
    """eventsourcing: ``select_notifications`` pages of 1,000 + ``mapper.to_domain_event``."""

    def __init__(self) -> None:
        self.filled: dict[int, Path] = {}

    def setup(self, size: int) -> None:
        if size not in self.filled:
            path = fresh_path("es-read")
            with peer.closing(peer.sqlite_app(path)) as app:
                peer.save_each(app, peer.new_orders(size // BATCH, BATCH))
            self.filled[size] = path
        self.app = peer.sqlite_app(self.filled[size])

    def run(self, size: int) -> int:
        return peer.read_notifications(self.app, size)

    def teardown(self) -> None:
        self.app.close()
