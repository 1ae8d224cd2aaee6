"""The event store: appends and reads per second, against the raw drivers and eventsourcing.

Every case stores the typical event of the envelope benchmark (a 641-byte envelope as tidings
stores it, plus id, type and three 32-byte hashes); eventsourcing stores an aggregate event with
the same payload and metadata strings (489 bytes of state, plus topic and originator id). Files
are on disk, never tmpfs; SQLite runs WAL with ``synchronous=FULL`` everywhere (eventsourcing's
setting is read back and checked at setup); PostgreSQL runs with the server's settings
(``synchronous_commit=on``). Each writing case starts from an empty database or schema.

- ``sqlite-batch/*``: 1,000 events per append, one new stream each. ``raw`` is sqlite3
  ``executemany`` of the very rows tidings writes (envelope and hashes precomputed) into
  tidings' own table (primary key, unique ``(stream_id, version)``, index by type), one
  transaction per 1,000 rows; ``raw.no-type-index`` the same without the index by type.
  eventsourcing: ``Application.save`` of aggregates holding 1,000 pending events each.
- ``sqlite-singles/*``: single-event appends from 16 concurrent writers (asyncio tasks for
  tidings, threads for eventsourcing, which is sync), each to its own stream with an exact
  expected version. ``raw``: one connection committing one row per transaction.
- ``read/*``: the first N events of one log: tidings ``read_all(limit=N)`` (a list of
  `RecordedEvent`) and ``subscribe()`` (catch-up until position N); ``raw``: SELECT of the
  columns tidings reads, in keyset pages of 10,000 rows, ``fetchall``, no decoding;
  ``raw+msgspec`` the same plus ``msgspec.json.decode`` of each envelope into a dict;
  eventsourcing: ``recorder.select_notifications`` in pages of 1,000 plus
  ``mapper.to_domain_event`` of each notification.
- ``replay/*``: a curve: events per second to replay the first 10k, 100k and 1M events of one
  log (filled once per process with batched appends, grown on demand) through ``subscribe``,
  against the raw page read. 5 years of a 10k-updates-a-day catalog (18.25M events) take
  18.25M / the 1M rate.
- ``pg-batch/*``, ``pg-writers/*``: PostgreSQL, batched appends as above (raw: psycopg
  ``executemany`` in one transaction per 1,000 rows, into tidings' DDL in a schema of its
  own), and single-event appends from 1, 4 and 16 concurrent writers (raw: one autocommit
  INSERT per event and connection; eventsourcing: threads).
"""

from __future__ import annotations

from typing import Final

from benchmarks import _eventstore_sqlite as lite
from benchmarks.api import Case, Cases, Hook, Skip

PACKAGES: Final = ("eventsourcing", "psycopg", "msgspec")
CASES = Cases()

BATCHED: Final = 20_000
SINGLES: Final = 2_048  # 128 per writer
PEER_SINGLES: Final = 160  # 10 per writer: one fsync each
READ: Final = 100_000
REPLAY: Final = (10_000, 100_000, 1_000_000)
WRITERS: Final = (1, 4, 16)


def _case(name: str, state: object, description: str, **options: object) -> None:
    """Declare a case whose setup, run and teardown are methods of ``state``."""
    hooks: dict[str, Hook | None] = {
        hook: getattr(state, hook, None) for hook in ("setup", "teardown")
    }
    CASES.append(
        Case(name=name, run=state.run, description=description, **hooks, **options)  # type: ignore[attr-defined,arg-type]
    )


# -- SQLite ------------------------------------------------------------------------------------

_case(
    "sqlite-batch/tidings",
    lite.TidingsBatch(),
    "append(stream, 1,000 events), SQLite FULL",
    size=BATCHED,
    baseline="sqlite-batch/raw",
    peers=("sqlite-batch/eventsourcing",),
)
_case(
    "sqlite-batch/raw",
    lite.RawBatch(),
    "sqlite3 executemany, 1,000 rows a transaction, same table",
    size=BATCHED,
)
_case(
    "sqlite-batch/raw.no-type-index",
    lite.RawBatch(type_index=False),
    "the same, table without the index by type",
    size=BATCHED,
    baseline="sqlite-batch/raw",
)
_case(
    "sqlite-batch/eventsourcing",
    lite.PeerBatch(),
    "Application.save(aggregate with 1,000 pending events)",
    size=BATCHED // 2,
)
_case(
    "sqlite-singles/tidings",
    lite.TidingsSingles(),
    "16 tasks, append(stream, [event]) each, SQLite FULL",
    size=SINGLES,
    quick_size=SINGLES // 4,
    baseline="sqlite-singles/raw",
    peers=("sqlite-singles/eventsourcing",),
)
_case(
    "sqlite-singles/raw",
    lite.RawSingles(),
    "sqlite3, one INSERT + COMMIT per event, 1 connection",
    size=PEER_SINGLES,
    quick_size=PEER_SINGLES,
)
_case(
    "sqlite-singles/eventsourcing",
    lite.PeerSingles(),
    "16 threads, Application.save(one event) each",
    size=PEER_SINGLES,
    quick_size=PEER_SINGLES,
)
for _how in ("read_all", "subscribe"):
    _case(
        f"read/tidings.{_how}",
        lite.TidingsRead(subscribe=_how == "subscribe"),
        f"{_how} of the log into RecordedEvent objects, SQLite",
        size=READ,
        baseline="read/raw",
        peers=("read/raw+msgspec", "read/eventsourcing"),
    )
_case("read/raw", lite.RawRead(decode=False), "sqlite3 SELECT pages, fetchall", size=READ)
_case(
    "read/raw+msgspec",
    lite.RawRead(decode=True),
    "the same + msgspec decode of each envelope to a dict",
    size=READ,
    baseline="read/raw",
)
_case(
    "read/eventsourcing",
    lite.PeerRead(),
    "select_notifications + mapper.to_domain_event",
    size=READ,
)
_case(
    "replay/tidings",
    lite.TidingsRead(subscribe=True),
    "subscribe() from 0 to the N-th event, SQLite",
    sizes=REPLAY,
    x_label="events replayed",
    plot="replay",
    baseline="replay/raw",
)
_case(
    "replay/raw",
    lite.RawRead(decode=False),
    "sqlite3 SELECT pages of the first N rows, fetchall",
    sizes=REPLAY,
    x_label="events replayed",
    plot="replay",
)

# -- PostgreSQL --------------------------------------------------------------------------------


def _declare_postgres() -> None:
    from benchmarks import _eventstore_postgres as pg

    _case(
        "pg-batch/tidings",
        pg.TidingsBatch(),
        "append(stream, 1,000 events), PostgreSQL",
        size=BATCHED,
        baseline="pg-batch/raw",
        peers=("pg-batch/eventsourcing",),
    )
    _case(
        "pg-batch/raw", pg.RawBatch(), "psycopg executemany, 1,000 rows a transaction", size=BATCHED
    )
    _case(
        "pg-batch/eventsourcing",
        pg.PeerBatch(),
        "Application.save(aggregate with 1,000 pending events)",
        size=BATCHED // 2,
    )
    curve = {"sizes": WRITERS, "quick_sizes": WRITERS, "x_label": "concurrent writers"}
    _case(
        "pg-writers/tidings",
        pg.TidingsSingles(),
        "N tasks, append(stream, [event]) each",
        baseline="pg-writers/raw",
        peers=("pg-writers/eventsourcing",),
        plot="postgres-writers",
        **curve,
    )
    _case(
        "pg-writers/raw",
        pg.RawSingles(),
        "N connections, autocommit INSERT of one row each",
        plot="postgres-writers",
        **curve,
    )
    _case(
        "pg-writers/eventsourcing",
        pg.PeerSingles(),
        "N threads, Application.save(one event) each",
        plot="postgres-writers",
        **curve,
    )


def _unavailable(reason: str) -> Hook:
    def setup(size: int) -> None:
        raise Skip(reason)

    return setup


try:
    _declare_postgres()
except ImportError as exc:  # psycopg missing: record the PostgreSQL cases as skipped
    for _name in ("pg-batch/tidings", "pg-writers/tidings"):
        CASES.append(Case(name=_name, run=lambda size: None, setup=_unavailable(str(exc))))
