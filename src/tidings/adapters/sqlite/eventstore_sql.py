"""The SQL of the SQLite event store, kept apart so the logic reads without it."""

import functools
from typing import Final

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tidings_events (
    position       INTEGER PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_id       TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    recorded_at_us INTEGER NOT NULL,
    flags          INTEGER NOT NULL,
    envelope       BLOB,
    content_hash   BLOB    NOT NULL,
    stream_hash    BLOB    NOT NULL,
    log_hash       BLOB    NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE INDEX IF NOT EXISTS tidings_events_by_type ON tidings_events (type, position);
CREATE TABLE IF NOT EXISTS tidings_streams (
    stream_id  TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    last_hash  BLOB    NOT NULL,
    max_count  INTEGER,
    max_age_us INTEGER,
    deleted    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tidings_streams_ruled ON tidings_streams (stream_id)
    WHERE deleted = 1 OR max_count IS NOT NULL OR max_age_us IS NOT NULL;
CREATE TABLE IF NOT EXISTS tidings_log_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL,
    log_hash BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS tidings_checkpoints (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS: Final = (
    "position, stream_id, version, recorded_at_us, flags, envelope,"
    " content_hash, stream_hash, log_hash"
)

_READ_COLUMNS: Final = "position, stream_id, version, recorded_at_us, flags, envelope"

LOG_HEAD: Final = "SELECT position, log_hash FROM tidings_log_head WHERE id = 1"
SET_LOG_HEAD: Final = (
    "INSERT INTO tidings_log_head (id, position, log_hash) VALUES (1, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET position = excluded.position, log_hash = excluded.log_hash"
)
STREAM_STATE: Final = (
    "SELECT version, max_count, max_age_us, deleted FROM tidings_streams WHERE stream_id = ?"
)
STREAM_FOR_WRITE: Final = (
    "SELECT version, last_hash, deleted FROM tidings_streams WHERE stream_id = ?"
)
EVENT_WIDTH: Final = 11
"""Parameters per row of `INSERT_EVENT` and `insert_events`."""
_INSERT_EVENTS: Final = (
    "INSERT INTO tidings_events (position, stream_id, version, event_id, type, recorded_at_us,"
    " flags, envelope, content_hash, stream_hash, log_hash) VALUES "
)
_EVENT_ROW: Final = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_EVENT: Final = _INSERT_EVENTS + _EVENT_ROW


@functools.cache
def insert_events(rows: int) -> str:
    """Return one INSERT of ``rows`` event rows (`EVENT_WIDTH` parameters each, flattened)."""
    return _INSERT_EVENTS + ", ".join([_EVENT_ROW] * rows)


UPSERT_STREAM: Final = (
    "INSERT INTO tidings_streams (stream_id, version, last_hash) VALUES (?, ?, ?)"
    " ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,"
    " last_hash = excluded.last_hash"
)
SET_METADATA: Final = (
    "INSERT INTO tidings_streams (stream_id, version, last_hash, max_count, max_age_us, deleted)"
    " VALUES (?1, 0, zeroblob(32), ?2, ?3, ?4)"
    " ON CONFLICT (stream_id) DO UPDATE SET max_count = ?2, max_age_us = ?3,"
    " deleted = max(deleted, ?4)"
)
SELECT_STREAM: Final = (
    f"SELECT {_READ_COLUMNS} FROM tidings_events WHERE stream_id = ? AND version BETWEEN ? AND ?"
    " AND recorded_at_us <= ? AND flags & 2 = 0 ORDER BY version LIMIT ?"
)
SELECT_STREAM_BACKWARDS: Final = SELECT_STREAM.replace("ORDER BY version", "ORDER BY version DESC")
SELECT_LOG: Final = (
    f"SELECT {_READ_COLUMNS} FROM tidings_events WHERE position > ? AND flags & 2 = 0"
    " ORDER BY position LIMIT ?"
)
SELECT_LOG_TYPES: Final = (
    f"SELECT {_READ_COLUMNS} FROM tidings_events WHERE position > ? AND type IN ({{marks}})"
    " AND flags & 2 = 0 ORDER BY position LIMIT ?"
)
SELECT_ALL_STORED: Final = (
    f"SELECT {_COLUMNS} FROM tidings_events WHERE position > ? AND position <= ?"
    " ORDER BY position LIMIT ?"
)
# Read for every page of the log: the partial index tidings_streams_ruled keeps it from
# scanning every stream (its WHERE must stay the index's, word for word).
RETENTION_RULES: Final = (
    "SELECT stream_id, version, max_count, max_age_us, deleted FROM tidings_streams"
    " WHERE deleted = 1 OR max_count IS NOT NULL OR max_age_us IS NOT NULL"
)
LIST_STREAMS: Final = (
    "SELECT stream_id, version, max_count, max_age_us, deleted FROM tidings_streams"
    " WHERE stream_id > ? ORDER BY stream_id LIMIT ?"
)
STREAM_HEADS: Final = "SELECT stream_id, version, last_hash FROM tidings_streams"
CHECKPOINT: Final = "SELECT position FROM tidings_checkpoints WHERE name = ?"
UPSERT_CHECKPOINT: Final = (
    "INSERT INTO tidings_checkpoints (name, position) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET position = excluded.position"
)
