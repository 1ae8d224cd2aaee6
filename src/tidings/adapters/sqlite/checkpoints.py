"""The projection registry in SQLite: tables, statements and the sync functions that use them.

Every function here runs on the read model's connection thread. The registry has one row per
projection version (``tidings_projections``) and one row per skipped event
(``tidings_projection_failures``); both live in the read model's own file, next to the tables
the projections write, so a checkpoint commits with the rows it covers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from tidings.errors import CheckpointConflict
from tidings.projections.errors import LeaseLost, ProjectionError
from tidings.projections.ports import Batch, Failure, ProjectionKey, ProjectionState, Status

__all__ = [
    "SCHEMA",
    "acquire",
    "activate",
    "drop",
    "failures",
    "fence",
    "record_failure",
    "register",
    "release",
    "set_status",
    "set_tables",
    "state",
    "states",
]

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tidings_projections (
    name             TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    position         INTEGER NOT NULL DEFAULT 0,
    status           TEXT    NOT NULL DEFAULT 'running',
    error            TEXT,
    active           INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until_us   INTEGER,
    last_recorded_us INTEGER NOT NULL DEFAULT 0,
    updated_at_us    INTEGER NOT NULL,
    tables           TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tidings_projection_failures (
    name           TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    event_id       TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    error          TEXT    NOT NULL,
    recorded_at_us INTEGER NOT NULL,
    PRIMARY KEY (name, version, position)
) WITHOUT ROWID;
"""

_REGISTER: Final = """
INSERT INTO tidings_projections (name, version, active, updated_at_us)
VALUES (?1, ?2, NOT EXISTS (SELECT 1 FROM tidings_projections WHERE name = ?1 AND active), ?3)
ON CONFLICT (name, version) DO NOTHING"""
_SELECT: Final = """
SELECT name, version, position, status, error, active, lease_owner, lease_until_us,
    last_recorded_us, updated_at_us
FROM tidings_projections"""
_STATE: Final = _SELECT + " WHERE name = ? AND version = ?"
_STATES: Final = _SELECT + " ORDER BY name, version"
_FENCE: Final = """
UPDATE tidings_projections SET position = ?, last_recorded_us = ?, updated_at_us = ?
WHERE name = ? AND version = ? AND lease_owner = ? AND position = ?"""
_ACQUIRE: Final = """
UPDATE tidings_projections SET lease_owner = ?1, lease_until_us = ?2
WHERE name = ?3 AND version = ?4
  AND (lease_owner IS NULL OR lease_owner = ?1 OR lease_until_us < ?5)"""
_RELEASE: Final = """
UPDATE tidings_projections SET lease_owner = NULL, lease_until_us = NULL
WHERE name = ? AND version = ? AND lease_owner = ?"""
_STATUS: Final = """
UPDATE tidings_projections SET status = ?, error = ?, updated_at_us = ?
WHERE name = ? AND version = ?"""
_FAILURE: Final = """
INSERT INTO tidings_projection_failures
    (name, version, position, event_id, type, error, recorded_at_us)
VALUES (?, ?, ?, ?, ?, ?, ?)"""
_FAILURES: Final = """
SELECT position, event_id, type, error, recorded_at_us FROM tidings_projection_failures
WHERE name = ? AND version = ? ORDER BY position LIMIT ?"""

_DELETE_FAILURES: Final = "DELETE FROM tidings_projection_failures WHERE name = ? AND version = ?"
_DELETE: Final = "DELETE FROM tidings_projections WHERE name = ? AND version = ?"


def quoted(name: str) -> str:
    """Return an identifier quoted for SQLite (names are checked to be [a-z0-9_] already)."""
    return f'"{name}"'


def _row_state(row: tuple[Any, ...]) -> ProjectionState:
    name, version, position, status, error, active, owner, until, recorded, updated = row
    return ProjectionState(
        key=ProjectionKey(str(name), int(version)),
        position=int(position),
        status=Status(status),
        error=error,
        active=bool(active),
        lease_owner=owner,
        lease_until_us=until,
        last_recorded_us=int(recorded),
        updated_at_us=int(updated),
    )


def register(conn: sqlite3.Connection, key: ProjectionKey, now_us: int) -> ProjectionState:
    """Create a version's row when missing; return its state."""
    conn.execute(_REGISTER, (key.name, key.version, now_us))
    return known(conn, key)


def state(conn: sqlite3.Connection, key: ProjectionKey) -> ProjectionState | None:
    """Return a version's state, or None."""
    row = conn.execute(_STATE, (key.name, key.version)).fetchone()
    return None if row is None else _row_state(row)


def known(conn: sqlite3.Connection, key: ProjectionKey) -> ProjectionState:
    """Return a version's state; raise `ProjectionError` when it is not registered."""
    found = state(conn, key)
    if found is None:
        raise ProjectionError(f"{key} is not registered", projection=key.name)
    return found


def states(conn: sqlite3.Connection) -> list[ProjectionState]:
    """Return every version's state, by name and version."""
    return [_row_state(row) for row in conn.execute(_STATES)]


def set_tables(conn: sqlite3.Connection, key: ProjectionKey, tables: Sequence[str]) -> None:
    """Remember which tables a version has (for views on activation and for drop)."""
    conn.execute(
        "UPDATE tidings_projections SET tables = ? WHERE name = ? AND version = ?",
        (",".join(tables), key.name, key.version),
    )


def set_status(
    conn: sqlite3.Connection, key: ProjectionKey, status: Status, error: str | None, now_us: int
) -> None:
    """Set a version's status and error."""
    known(conn, key)
    shown = error if status is Status.FAILED else None
    conn.execute(_STATUS, (status.value, shown, now_us, key.name, key.version))


def fence(conn: sqlite3.Connection, key: ProjectionKey, batch: Batch, now_us: int) -> None:
    """Move the checkpoint, only from ``batch.after`` and only for the lease holder."""
    params = (batch.up_to, batch.last_recorded_us, now_us, key.name, key.version)
    if conn.execute(_FENCE, (*params, batch.owner, batch.after)).rowcount == 1:
        return
    current = known(conn, key)
    if current.lease_owner != batch.owner:
        raise LeaseLost(key.name, batch.owner, current.lease_owner)
    raise CheckpointConflict(str(key), current.position, batch.up_to)


def record_failure(
    conn: sqlite3.Connection, key: ProjectionKey, failure: Failure, now_us: int
) -> None:
    """Record a skipped event."""
    conn.execute(
        _FAILURE,
        (
            key.name,
            key.version,
            failure.position,
            failure.event_id,
            failure.event_type,
            failure.error,
            now_us,
        ),
    )


def failures(conn: sqlite3.Connection, key: ProjectionKey, limit: int) -> list[Failure]:
    """Return a version's skipped events in position order."""
    rows = conn.execute(_FAILURES, (key.name, key.version, limit)).fetchall()
    return [Failure(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def acquire(
    conn: sqlite3.Connection, key: ProjectionKey, owner: str, until_us: int, now_us: int
) -> bool:
    """Take or renew a lease; False when another owner's lease has not expired."""
    known(conn, key)
    params = (owner, until_us, key.name, key.version, now_us)
    return conn.execute(_ACQUIRE, params).rowcount == 1


def release(conn: sqlite3.Connection, key: ProjectionKey, owner: str) -> None:
    """Give a lease up if ``owner`` holds it."""
    conn.execute(_RELEASE, (key.name, key.version, owner))


def _tables(conn: sqlite3.Connection, key: ProjectionKey) -> list[str]:
    known(conn, key)
    sql = "SELECT tables FROM tidings_projections WHERE name = ? AND version = ?"
    text = conn.execute(sql, (key.name, key.version)).fetchone()[0]
    return [t for t in str(text).split(",") if t]


def activate(conn: sqlite3.Connection, key: ProjectionKey, now_us: int) -> None:
    """Make a version active and point a view named after each table at its table."""
    for table in _tables(conn, key):
        conn.execute(f"DROP VIEW IF EXISTS {quoted(table)}")
        versioned = quoted(f"{table}_v{key.version}")
        conn.execute(f"CREATE VIEW {quoted(table)} AS SELECT * FROM {versioned}")  # noqa: S608
    conn.execute(
        "UPDATE tidings_projections SET active = (version = ?), updated_at_us = ? WHERE name = ?",
        (key.version, now_us, key.name),
    )


def drop(conn: sqlite3.Connection, key: ProjectionKey) -> None:
    """Drop a version's tables, failures and row; refuse the active version."""
    if known(conn, key).active:
        raise ProjectionError(
            f"{key} is active; activate another version first", projection=key.name
        )
    for table in _tables(conn, key):
        conn.execute(f"DROP TABLE IF EXISTS {quoted(f'{table}_v{key.version}')}")
    for sql in (_DELETE_FAILURES, _DELETE):
        conn.execute(sql, (key.name, key.version))
