"""Events, files and raw SQL shared by the event store benchmark (not a benchmark module).

Every library stores the same typical event as the envelope benchmark (type, source, subject,
correlation and causation ids, one extension, a 9-field payload): tidings as its stored
envelope, the raw drivers as the very bytes tidings stores, eventsourcing as an aggregate event
with the same payload and metadata attributes (see `_eventstore_peer`).
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from benchmarks._envelope_fixtures import EVENT
from tidings import Event
from tidings.adapters.sqlite import eventstore_sql as q
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.eventstore import StreamAppend
from tidings.eventstore.records import encode_event
from tidings.ids import new_event_id

__all__ = [
    "BATCH",
    "ENVELOPE_BYTES",
    "FOLDER",
    "RAW_INSERT",
    "RAW_PAGE",
    "RAW_SELECT",
    "batches",
    "create_raw_table",
    "events_for",
    "fresh_path",
    "new_events",
    "raw_rows",
    "read_raw_pages",
    "shared_log",
    "sqlite_connect",
]

BATCH: Final = 1_000
"""Events per batched append."""
RAW_PAGE: Final = 10_000
"""Rows per SELECT of the raw read (keyset pages, so a 1M-row log is never all in memory)."""

FOLDER: Final = Path(tempfile.mkdtemp(prefix="tidings-bench-eventstore-"))
atexit.register(shutil.rmtree, FOLDER, True)

ENVELOPE_BYTES: Final = len(encode_event(EVENT, limit=1 << 20)[0])
"""Size of the stored envelope of the typical event (the bytes every raw case inserts)."""

RAW_INSERT: Final = q.INSERT_EVENT
"""tidings' own INSERT: the raw baselines write the same columns into the same table."""
RAW_SELECT: Final = (
    "SELECT position, stream_id, version, recorded_at_us, flags, envelope FROM tidings_events"
    " WHERE position > ? AND position <= ? AND flags & 2 = 0 ORDER BY position LIMIT ?"
)
"""The raw read: the columns tidings reads, the same filter, keyset pages."""


def fresh_path(label: str) -> Path:
    """Return a new database path in the benchmark's temp folder (on disk, not tmpfs)."""
    return FOLDER / f"{label}-{uuid.uuid4().hex[:12]}.db"


def new_events(count: int) -> list[Event]:
    """Return ``count`` copies of the typical event, each with its own id (untimed work)."""
    return [EVENT.replace(id=new_event_id()) for _ in range(count)]


_EVENTS: dict[int, list[Event]] = {}


def events_for(size: int) -> list[Event]:
    """Return ``size`` distinct events, built once per size (writers never modify them)."""
    if size not in _EVENTS:
        _EVENTS[size] = new_events(size)
    return _EVENTS[size]


def batches(events: Sequence[Event], size: int = BATCH) -> Iterator[Sequence[Event]]:
    """Yield consecutive slices of ``size`` events."""
    for start in range(0, len(events), size):
        yield events[start : start + size]


def sqlite_connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open a raw connection with tidings' pragmas (WAL, the given synchronous, autocommit)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def create_raw_table(conn: sqlite3.Connection, *, type_index: bool = True) -> None:
    """Create tidings' tables (the same DDL), optionally without the index by type."""
    schema = q.SCHEMA
    if not type_index:
        schema = "\n".join(line for line in schema.splitlines() if "_by_type" not in line)
    conn.executescript(schema)


def raw_rows(
    events: Sequence[Event],
    stream_id: str,
    first_position: int,
    recorded_at_us: int,
    *,
    first_version: int = 1,
) -> list[tuple[object, ...]]:
    """Return the rows tidings would insert for one stream's events, hashes precomputed."""
    rows: list[tuple[object, ...]] = []
    for offset, event in enumerate(events):
        envelope, flags = encode_event(event, limit=1 << 20)
        digest = hashlib.sha256(envelope).digest()
        position, version = first_position + offset, first_version + offset
        row = (position, stream_id, version, event.id, event.type, recorded_at_us, flags)
        rows.append((*row, envelope, digest, digest, digest))
    return rows


def read_raw_pages(conn: sqlite3.Connection, up_to: int) -> int:
    """Read positions 1..up_to with fetchall per page, no decoding; return the rows read."""
    after, count = 0, 0
    while after < up_to:
        rows = conn.execute(RAW_SELECT, (after, up_to, RAW_PAGE)).fetchall()
        if not rows:
            break
        count += len(rows)
        after = rows[-1][0]
    return count


# -- one filled log per process, shared by the read cases and the replay curve ---------------

CATALOG_STREAMS: Final = 10_000
"""Streams of the shared log: a catalog of 10,000 products, each updated again and again."""
_PER_PART: Final = 10


class SharedLog:
    """A tidings SQLite log grown on demand (untimed): ``ensure(n)`` makes it hold n events.

    Shaped like the catalog: ``append_many`` of 100 product streams x 10 events (1,000 events a
    commit), cycling through `CATALOG_STREAMS` streams, so a read also meets a streams table of
    realistic size.
    """

    def __init__(self) -> None:
        self.path = FOLDER / "shared-log.db"
        self.size = 0
        self.parts = 0

    async def ensure(self, size: int) -> Path:
        """Return the database file, after appending events until it holds ``size``."""
        if self.size < size:
            await self._grow(size)
        return self.path

    def ensure_sync(self, size: int) -> Path:
        """`ensure` for a sync case (outside any event loop)."""
        return asyncio.run(self.ensure(size))

    async def _grow(self, size: int) -> None:
        # synchronous=OFF only for filling: no read case depends on how the rows got there.
        async with SQLiteEventStore(self.path, synchronous="OFF") as store:
            while self.size < size:
                for batch in batches(new_events(min(50 * BATCH, size - self.size))):
                    await store.append_many([self._part(p) for p in batches(batch, _PER_PART)])
                    self.size += len(batch)

    def _part(self, events: Sequence[Event]) -> StreamAppend:
        self.parts += 1
        return StreamAppend(f"product-{self.parts % CATALOG_STREAMS}", events)


shared_log: Final = SharedLog()
