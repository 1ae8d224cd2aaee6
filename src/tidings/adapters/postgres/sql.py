"""The SQL text of the PostgreSQL event store, rendered once per schema.

Every statement names its tables through `psycopg.sql.Identifier`, so the schema is quoted by
the driver; every value is a parameter. `Statements.render` turns the templates below into
bytes for one schema when the store is built, so no statement is composed per call (the ones
whose shape depends on the call, `select_stream`, are composed once per shape and cached).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Final, LiteralString

from psycopg import sql

from tidings.errors import ConfigurationError
from tidings.events import Event
from tidings.eventstore.records import chain, content_hash

__all__ = [
    "DDL",
    "READ_COLUMNS",
    "RECORD_COLUMNS",
    "InsertBatch",
    "Statements",
    "channel",
    "check_schema",
    "create_schema",
    "ddl",
    "lock_key",
    "select_stream",
]

_SCHEMA: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,54}")
"""A plain identifier short enough that ``tidings_<schema>`` is a valid channel name."""

RECORD_COLUMNS: Final = (
    "position, stream_id, version, recorded_at_us, flags, envelope,"
    " content_hash, stream_hash, log_hash"
)
"""The columns of a `StoredRecord`, in its field order."""

READ_COLUMNS: Final = "position, stream_id, version, recorded_at_us, flags, envelope"
"""The columns of a `ReadRow`, in its order."""

DDL: Final[tuple[LiteralString, ...]] = (
    """CREATE TABLE IF NOT EXISTS {events} (
        id BIGSERIAL PRIMARY KEY,
        position BIGINT,
        stream_id TEXT COLLATE "C" NOT NULL,
        version BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        type TEXT COLLATE "C" NOT NULL,
        recorded_at_us BIGINT NOT NULL,
        flags SMALLINT NOT NULL,
        envelope BYTEA,
        content_hash BYTEA NOT NULL,
        stream_hash BYTEA NOT NULL,
        log_hash BYTEA,
        txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        UNIQUE (stream_id, version))""",
    # Unique like a UNIQUE constraint, but the unpositioned rows are not indexed at all.
    """CREATE UNIQUE INDEX IF NOT EXISTS tidings_events_position
        ON {events} (position) WHERE position IS NOT NULL""",
    # By inserting transaction: the sequencer starts its scan at `scan_from`, past the entries
    # of rows positioned since the last vacuum (they stay in a partial index until then).
    """CREATE INDEX IF NOT EXISTS tidings_events_unpositioned
        ON {events} (txid, id) WHERE position IS NULL""",
    """CREATE INDEX IF NOT EXISTS tidings_events_type_position
        ON {events} (type, position) WHERE position IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS {streams} (
        stream_id TEXT COLLATE "C" PRIMARY KEY,
        version BIGINT NOT NULL,
        last_hash BYTEA NOT NULL,
        max_count INT,
        max_age_us BIGINT,
        deleted BOOL NOT NULL DEFAULT false)""",
    """CREATE INDEX IF NOT EXISTS tidings_streams_ruled ON {streams} (stream_id)
        WHERE deleted OR max_count IS NOT NULL OR max_age_us IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS {head} (
        singleton BOOL PRIMARY KEY DEFAULT true CHECK (singleton),
        position BIGINT NOT NULL,
        log_hash BYTEA NOT NULL,
        scan_from xid8 NOT NULL DEFAULT '0')""",
    """CREATE TABLE IF NOT EXISTS {checkpoints} (
        name TEXT COLLATE "C" PRIMARY KEY,
        position BIGINT NOT NULL)""",
)
"""Idempotent table creation, run under an advisory lock so two processes may start at once."""


@dataclass(frozen=True, slots=True)
class Statements:
    """Every fixed statement of the store, rendered as bytes for one schema.

    Array parameters are passed in binary (``%b``): psycopg's text dump of a 1,000-element
    bytea array costs about 7 times as much client CPU and twice the bytes.
    """

    init_log_head: bytes = (
        b"INSERT INTO {head} (position, log_hash) VALUES (0, %s) ON CONFLICT DO NOTHING"
    )
    analyze_log_head: bytes = b"ANALYZE {head}"  # one row: estimates that fit from the start
    # Per pooled connection. Positions must be durable before anyone sees them (a commit lost in
    # a crash could be sequenced again in another order), so synchronous_commit is forced on;
    # JIT compiling costs more than any of these statements.
    configure: bytes = b"""
        SELECT set_config('synchronous_commit', 'on', false), set_config('jit', 'off', false)"""
    table_exists: bytes = b"SELECT to_regclass(%s) IS NOT NULL"
    schema_exists: bytes = b"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)"

    # -- append transaction -------------------------------------------------------------------
    ensure_streams: bytes = b"""
        INSERT INTO {streams} (stream_id, version, last_hash)
        SELECT s, 0, %s FROM unnest(%b::text[]) AS s ORDER BY s COLLATE "C"
        ON CONFLICT (stream_id) DO NOTHING"""
    lock_streams: bytes = b"""
        SELECT stream_id, version, last_hash, deleted FROM {streams}
        WHERE stream_id = ANY(%b::text[]) ORDER BY stream_id FOR UPDATE"""
    advance_checkpoint: bytes = b"""
        INSERT INTO {checkpoints} AS c (name, position) VALUES (%s, %s)
        ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position
        WHERE c.position < EXCLUDED.position
        RETURNING position"""
    # One statement inserts the rows and moves the streams' heads; it returns each stream's
    # last row id. Rows are inserted in the order given, so ids follow versions.
    insert_events: bytes = b"""
        WITH inserted AS (
            INSERT INTO {events} (stream_id, version, event_id, type, recorded_at_us, flags,
                                  envelope, content_hash, stream_hash)
            SELECT u.stream_id, u.version, u.event_id, u.type, %s, u.flags,
                   u.envelope, u.content_hash, u.stream_hash
            FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::text[], %b::int2[],
                        %b::bytea[], %b::bytea[], %b::bytea[])
                 WITH ORDINALITY AS u(stream_id, version, event_id, type, flags,
                                      envelope, content_hash, stream_hash, n)
            ORDER BY u.n
            RETURNING id, stream_id),
        heads AS (
            UPDATE {streams} AS s SET version = h.version, last_hash = h.last_hash
            FROM unnest(%b::text[], %b::bigint[], %b::bytea[]) AS h(stream_id, version, last_hash)
            WHERE s.stream_id = h.stream_id)
        SELECT stream_id, max(id) FROM inserted GROUP BY stream_id"""

    # -- sequencer ----------------------------------------------------------------------------
    advisory_xact_lock: bytes = b"SELECT pg_advisory_xact_lock(%s)"
    # After the lock, in a statement of its own (so its snapshot follows the lock): the head,
    # the oldest transaction still running, then every unpositioned row in id order (one row
    # with NULLs when there are none). No LIMIT: a run positions whole transactions, so an
    # append becomes visible all at once. Every row without a position was inserted by a
    # transaction at or after the previous run's oldest running one (`scan_from`).
    unpositioned: bytes = b"""
        SELECT h.position, h.log_hash, pg_snapshot_xmin(pg_current_snapshot())::text,
               e.id, e.content_hash
        FROM {head} AS h LEFT JOIN (
            SELECT id, content_hash FROM {events}
            WHERE position IS NULL AND txid >= (SELECT scan_from FROM {head})
        ) AS e ON true
        ORDER BY e.id"""
    set_positions: bytes = b"""
        WITH positioned AS (
            UPDATE {events} AS e SET position = %(head)s + u.n, log_hash = u.log_hash
            FROM unnest(%(ids)b::bigint[], %(hashes)b::bytea[])
                 WITH ORDINALITY AS u(id, log_hash, n)
            WHERE e.id = u.id),
        head AS (UPDATE {head} SET position = %(new_head)s, log_hash = %(new_hash)s,
                        scan_from = %(scan_from)s::xid8)
        SELECT pg_notify(%(channel)s, %(new_head)s::text)"""
    any_unpositioned: bytes = b"""
        SELECT EXISTS (SELECT 1 FROM {events} WHERE position IS NULL
                       AND txid >= (SELECT scan_from FROM {head}))"""
    positions_of: bytes = b"SELECT id, position FROM {events} WHERE id = ANY(%b::bigint[])"

    # -- reads --------------------------------------------------------------------------------
    head: bytes = b"SELECT position FROM {head}"
    select_log: bytes = b"""
        SELECT {read_columns} FROM {events}
        WHERE position > %s AND flags & 2 = 0 ORDER BY position LIMIT %s"""
    select_log_types: bytes = b"""
        SELECT {read_columns} FROM {events}
        WHERE position > %s AND flags & 2 = 0 AND type = ANY(%b::text[])
        ORDER BY position LIMIT %s"""
    iter_stored: bytes = b"""
        SELECT {columns} FROM {events}
        WHERE position > %s AND position <= %s ORDER BY position LIMIT %s"""
    # Rows above the recorded head, read in the same snapshot as the head: an honest store has
    # none (positions and head commit together), so any row here was forged.
    beyond_head: bytes = b"""
        SELECT {columns} FROM {events}
        WHERE position > (SELECT position FROM {head}) ORDER BY position LIMIT %s"""
    stream_state: bytes = b"""
        SELECT version, max_count, max_age_us, deleted FROM {streams} WHERE stream_id = %s"""
    retention_rules: bytes = b"""
        SELECT stream_id, version, max_count, max_age_us, deleted FROM {streams}
        WHERE deleted OR max_count IS NOT NULL OR max_age_us IS NOT NULL"""
    list_streams: bytes = b"""
        SELECT stream_id, version, max_count, max_age_us, deleted FROM {streams}
        ORDER BY stream_id LIMIT %s"""
    list_streams_after: bytes = b"""
        SELECT stream_id, version, max_count, max_age_us, deleted FROM {streams}
        WHERE stream_id > %s ORDER BY stream_id LIMIT %s"""
    set_metadata: bytes = b"""
        INSERT INTO {streams} AS s (stream_id, version, last_hash, max_count, max_age_us, deleted)
        VALUES (%s, 0, %s, %s, %s, %s)
        ON CONFLICT (stream_id) DO UPDATE SET max_count = EXCLUDED.max_count,
            max_age_us = EXCLUDED.max_age_us, deleted = s.deleted OR EXCLUDED.deleted"""
    read_checkpoint: bytes = b"SELECT position FROM {checkpoints} WHERE name = %s"
    repeatable_read: bytes = b"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    # A stream whose newest rows are not positioned yet ends, as far as the log goes, at the
    # row before the first unpositioned one (positioned rows of a stream are always a prefix).
    stream_heads: bytes = b"""
        SELECT s.stream_id, s.version, s.last_hash, u.first, prev.stream_hash
        FROM {streams} AS s
        LEFT JOIN (SELECT stream_id, min(version) AS first FROM {events}
                   WHERE position IS NULL AND txid >= (SELECT scan_from FROM {head})
                   GROUP BY stream_id) AS u USING (stream_id)
        LEFT JOIN {events} AS prev
               ON prev.stream_id = s.stream_id AND prev.version = u.first - 1"""

    @classmethod
    def render(cls, schema: str) -> Statements:
        """Return the statements with the tables of ``schema`` filled in."""
        names = _names(schema)
        return cls(**{f.name: _compose(f.default, names) for f in fields(cls)})


def _compose(template: object, names: dict[str, sql.Composable]) -> bytes:
    assert isinstance(template, bytes)
    return sql.SQL(template.decode()).format(**names).as_bytes()


@dataclass(slots=True)
class InsertBatch:
    """The rows of one append transaction, as the column arrays of one INSERT ... unnest."""

    recorded_at_us: int
    stream_ids: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    envelopes: list[bytes] = field(default_factory=list)
    content_hashes: list[bytes] = field(default_factory=list)
    stream_hashes: list[bytes] = field(default_factory=list)

    def add(
        self,
        stream_id: str,
        head: tuple[int, bytes],
        events: Sequence[Event],
        encoded: Sequence[tuple[bytes, int]],
    ) -> tuple[int, bytes]:
        """Add one stream's events after its head; return the stream's new head."""
        version, last_hash = head
        for event, (envelope, flags) in zip(events, encoded, strict=True):
            version += 1
            digest = content_hash(stream_id, version, self.recorded_at_us, flags, envelope)
            last_hash = chain(last_hash, digest)
            self.stream_ids.append(stream_id)
            self.versions.append(version)
            self.event_ids.append(event.id)
            self.types.append(event.type)
            self.flags.append(flags)
            self.envelopes.append(envelope)
            self.content_hashes.append(digest)
            self.stream_hashes.append(last_hash)
        return version, last_hash

    def params(self) -> tuple[object, ...]:
        """Return the parameters of ``Statements.insert_events``."""
        return (
            self.recorded_at_us,
            self.stream_ids,
            self.versions,
            self.event_ids,
            self.types,
            self.flags,
            self.envelopes,
            self.content_hashes,
            self.stream_hashes,
        )


def ddl(schema: str) -> list[bytes]:
    """Return the schema-creation statements for ``schema``."""
    names = _names(schema)
    return [sql.SQL(text).format(**names).as_bytes() for text in DDL]


def create_schema(schema: str) -> bytes:
    """Return the statement that creates ``schema`` (run only when it is missing: it needs the
    CREATE privilege on the database even with IF NOT EXISTS)."""
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)).as_bytes()


def _names(schema: str) -> dict[str, sql.Composable]:
    return {
        "schema": sql.Identifier(schema),
        "events": sql.Identifier(schema, "tidings_events"),
        "streams": sql.Identifier(schema, "tidings_streams"),
        "head": sql.Identifier(schema, "tidings_log_head"),
        "checkpoints": sql.Identifier(schema, "tidings_checkpoints"),
        "columns": sql.SQL(RECORD_COLUMNS),
        "read_columns": sql.SQL(READ_COLUMNS),
    }


@functools.lru_cache(maxsize=64)
def select_stream(
    schema: str,
    *,
    backwards: bool,
    from_version: bool,
    max_version: bool,
    max_recorded: bool,
    limit: bool,
) -> bytes:
    """Return the stream read for one combination of bounds; parameters in this order:
    stream id, min version, then each bound that is set, then the limit."""
    where: list[sql.Composable] = [
        sql.SQL("stream_id = %s AND version >= %s AND position IS NOT NULL AND flags & 2 = 0")
    ]
    if from_version:
        where.append(sql.SQL("version <= %s" if backwards else "version >= %s"))
    if max_version:
        where.append(sql.SQL("version <= %s"))
    if max_recorded:
        where.append(sql.SQL("recorded_at_us <= %s"))
    query = sql.SQL("SELECT {columns} FROM {events} WHERE {where} ORDER BY version {order}{limit}")
    return query.format(
        columns=sql.SQL(READ_COLUMNS),
        events=sql.Identifier(schema, "tidings_events"),
        where=sql.SQL(" AND ").join(where),
        order=sql.SQL("DESC" if backwards else "ASC"),
        limit=sql.SQL(" LIMIT %s" if limit else ""),
    ).as_bytes()


def check_schema(schema: str) -> str:
    """Return ``schema`` if it is a plain identifier of at most 55 characters."""
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise ConfigurationError(
            f"schema {schema!r} must match {_SCHEMA.pattern} (letters, digits, underscore)"
        )
    return schema


def lock_key(purpose: str, schema: str) -> int:
    """Return a stable signed 64-bit advisory lock key for one purpose in one schema."""
    digest = hashlib.sha256(f"tidings.{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def channel(schema: str) -> str:
    """Return the NOTIFY channel on which the store announces a new log head."""
    return f"tidings_{schema}"
