"""SQLite cases of the messaging benchmark: `SQLiteBroker` against raw sqlite3 doing the same
inserts and selects on the same tables, and the publish-to-handler latency at a steady rate.

Every case uses a fresh database file (WAL, ``synchronous=FULL``, as the broker's default) and
a one-partition topic, with the typical event of the envelope benchmark:

- ``sqlite-publish/*``: N events in calls of 1,000, each call returning once committed.
  ``raw``: encode each event (msgspec) and insert the rows, with their offsets, into
  ``tidings_messages`` in one transaction per 1,000; ``tidings``: ``publish(topic, batch)``.
- ``sqlite-consume/*``: N stored events consumed and acked by a new group, 64 at a time.
  ``raw``: per 64, in one transaction, select the next messages, insert their pending rows and
  move the cursor; decode each envelope into an `Event`; then delete the 64 pending rows (the
  acks) in a second transaction. ``tidings``: ``subscribe(prefetch=64)`` + ``ack()`` of every
  delivery, one at a time.

`measure_latency` publishes one event at a time at a steady rate while a subscriber in the same
process acks them, and reports the publish-to-handler latency percentiles; its floor is raw
sqlite3 committing one insert and then one claim, the two transactions every event goes
through (``python -m benchmarks.messaging`` prints both).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from benchmarks._envelope_fixtures import PAYLOAD, make_event
from benchmarks.api import Case
from tidings.adapters.sqlite import broker_sql as q
from tidings.adapters.sqlite.broker import SQLiteBroker
from tidings.events import Event

__all__ = ["Latency", "measure_latency", "measure_raw_latency", "sqlite_cases"]

BATCH: Final = 1_000
FETCH: Final = 64
TOPIC: Final = "bench"
_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Event)


class _File:
    """A fresh directory per run, removed afterwards."""

    def make(self, size: int) -> Path:
        self.directory = Path(tempfile.mkdtemp(prefix="tidings-bench-"))
        self.events = [make_event(PAYLOAD) for _ in range(size)]
        return self.directory / "broker.db"

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(q.SCHEMA)
    conn.execute(
        "INSERT INTO tidings_topics (topic_id, name, partitions) VALUES (1, ?, 1)", (TOPIC,)
    )
    conn.execute("INSERT INTO tidings_partitions (topic_id, partition) VALUES (1, 0)")
    return conn


def _raw_insert(conn: sqlite3.Connection, events: list[Event], first: int) -> None:
    rows = [
        (1, 0, first + n, e.id, None, 0, _encoder.encode(e), None, time.time_ns() // 1000)
        for n, e in enumerate(events)
    ]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(q.INSERT_MESSAGE, rows)
    conn.execute(q.SET_HEAD, (first + len(events), 1, 0))
    conn.execute("COMMIT")


class RawPublish(_File):
    """sqlite3: encode and insert the same rows, one transaction per 1,000."""

    def setup(self, size: int) -> None:
        self.conn = _raw_connection(self.make(size))

    def run(self, size: int) -> None:
        for start in range(0, size, BATCH):
            _raw_insert(self.conn, self.events[start : start + BATCH], start)

    def teardown(self) -> None:
        self.conn.close()
        self.remove()


class TidingsPublish(_File):
    """SQLiteBroker.publish(topic, 1,000 events) until N are stored."""

    async def setup(self, size: int) -> None:
        self.broker = await SQLiteBroker(self.make(size)).open()
        await self.broker.create_topic(TOPIC, partitions=1)

    async def run(self, size: int) -> None:
        for start in range(0, size, BATCH):
            await self.broker.publish(TOPIC, self.events[start : start + BATCH])

    async def teardown(self) -> None:
        await self.broker.aclose()
        self.remove()


class RawConsume(_File):
    """sqlite3: claim 64 (select, insert pending rows, move the cursor), decode, delete them."""

    def setup(self, size: int) -> None:
        self.conn = _raw_connection(self.make(size))
        for start in range(0, size, BATCH):
            _raw_insert(self.conn, self.events[start : start + BATCH], start)
        self.conn.execute(
            "INSERT INTO tidings_groups (group_id, topic_id, name) VALUES (1, 1, 'g')"
        )
        self.conn.execute(q.INSERT_CURSOR, (1, 0, 0))

    def run(self, size: int) -> None:
        done = 0
        while done < size:
            offsets = self._claim(done)
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(q.ACK, [(1, 0, offset, 7) for offset in offsets])
            self.conn.execute("COMMIT")
            done += len(offsets)

    def _claim(self, cursor: int) -> list[int]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(q.NEW_MESSAGES, (1, 0, cursor, FETCH)).fetchall()
        until = time.time_ns() // 1000 + 30_000_000
        conn.executemany(q.INSERT_PENDING, [(1, 0, r[0], until, "m", 7) for r in rows])
        conn.execute(q.SET_CURSOR, (rows[-1][0] + 1, 1, 0))
        conn.execute("COMMIT")
        for row in rows:
            _decoder.decode(row[3])
        return [row[0] for row in rows]

    def teardown(self) -> None:
        self.conn.close()
        self.remove()


class TidingsConsume(_File):
    """SQLiteBroker.subscribe(prefetch=64) and ack every delivery, one at a time."""

    async def setup(self, size: int) -> None:
        self.broker = await SQLiteBroker(self.make(size)).open()
        await self.broker.create_topic(TOPIC, partitions=1)
        for start in range(0, size, BATCH):
            await self.broker.publish(TOPIC, self.events[start : start + BATCH])

    async def run(self, size: int) -> None:
        async with self.broker.subscribe(TOPIC, group="g", prefetch=FETCH) as subscription:
            done = 0
            async for delivery in subscription:
                await delivery.ack()
                done += 1
                if done == size:
                    break

    async def teardown(self) -> None:
        await self.broker.aclose()
        self.remove()


@dataclass(frozen=True)
class Latency:
    """Percentiles of one latency run, in milliseconds, and the rate reached."""

    p50: float
    p99: float
    max: float
    rate: float

    @classmethod
    def of(cls, seconds: list[float], elapsed: float) -> Latency:
        """Summarise latencies (seconds) measured over ``elapsed`` seconds."""
        ms = sorted(s * 1000 for s in seconds)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        return cls(statistics.median(ms), p99, ms[-1], len(ms) / elapsed)


async def measure_latency(*, rate: int = 1_000, seconds: float = 5.0) -> Latency:
    """Publish single events at ``rate`` per second; return publish-to-handler latency."""
    files = _File()
    path = files.make(int(rate * seconds))
    sent: dict[str, float] = {}
    seen: list[float] = []
    try:
        async with SQLiteBroker(path) as broker:
            await broker.create_topic(TOPIC, partitions=1)
            async with broker.subscribe(TOPIC, group="g") as subscription:
                await subscription.join()
                reader = asyncio.create_task(_handle(subscription, sent, seen, len(files.events)))
                started = time.perf_counter()
                await _publish_steadily(broker, files.events, sent, rate)
                await asyncio.wait_for(reader, 30)
                return Latency.of(seen, time.perf_counter() - started)
    finally:
        files.remove()


async def _handle(subscription: object, sent: dict[str, float], seen: list[float], n: int) -> None:
    async for delivery in subscription:  # type: ignore[attr-defined]
        seen.append(time.perf_counter() - sent[delivery.event.id])
        await delivery.ack()
        if len(seen) == n:
            return


async def _publish_steadily(
    broker: SQLiteBroker, events: list[Event], sent: dict[str, float], rate: int
) -> None:
    start, tasks = time.perf_counter(), []
    for index, event in enumerate(events):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[event.id] = time.perf_counter()
        tasks.append(asyncio.create_task(broker.publish(TOPIC, [event])))
    await asyncio.gather(*tasks)


def measure_raw_latency(*, count: int = 2_000) -> Latency:
    """The floor: raw sqlite3 committing one insert, then one claim, per event, back to back."""
    files = _File()
    conn = _raw_connection(files.make(count))
    raw = RawConsume()
    raw.conn = conn
    seen = []
    started = time.perf_counter()
    for offset, event in enumerate(files.events):
        begun = time.perf_counter()
        _raw_insert(conn, [event], offset)
        raw._claim(offset)
        seen.append(time.perf_counter() - begun)
    elapsed = time.perf_counter() - started
    conn.close()
    files.remove()
    return Latency.of(seen, elapsed)


def sqlite_cases(*, size: int = 20_000) -> list[Case]:
    """Return the SQLite cases, ready to append to the messaging module's ``CASES``."""

    def case(name: str, state: _File, **options: object) -> Case:
        doc = (type(state).__doc__ or "").strip().splitlines()[0]
        return Case(
            name=name,
            run=state.run,  # type: ignore[attr-defined]
            setup=state.setup,  # type: ignore[attr-defined]
            teardown=state.teardown,  # type: ignore[attr-defined]
            unit="events/s",
            description=doc,
            **{"size": size, **options},  # type: ignore[arg-type]
        )

    return [
        case("sqlite-publish/raw", RawPublish(), size=50_000),
        case(
            "sqlite-publish/tidings", TidingsPublish(), size=50_000, baseline="sqlite-publish/raw"
        ),
        case("sqlite-consume/raw", RawConsume()),
        case("sqlite-consume/tidings", TidingsConsume(), baseline="sqlite-consume/raw"),
    ]
