"""Snapshots in SQLite (table ``tidings_snapshots``), usually in the event store's own file.

The store has its own connection and thread. Snapshots are a cache that can always be rebuilt
from the events, so commits use ``synchronous=NORMAL``: a snapshot survives a crash of the
process, and at worst the last few are lost with the machine.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from tidings.adapters.sqlite.connection import SQLiteThread, path_from_url
from tidings.domain.snapshots import Snapshot, SnapshotStore
from tidings.lifecycle import Resource

__all__ = ["SQLiteSnapshotStore", "sqlite_path"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tidings_snapshots (
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state BLOB NOT NULL,
    recorded_at_us INTEGER NOT NULL,
    PRIMARY KEY (stream_id, version)
)"""
_SAVE: Final = """
INSERT INTO tidings_snapshots (stream_id, version, schema_version, state, recorded_at_us)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (stream_id, version) DO UPDATE SET
    schema_version = excluded.schema_version,
    state = excluded.state,
    recorded_at_us = excluded.recorded_at_us"""
_LATEST: Final = """
SELECT stream_id, version, schema_version, state, recorded_at_us FROM tidings_snapshots
WHERE stream_id = ? AND version <= ? ORDER BY version DESC LIMIT 1"""
_DELETE: Final = "DELETE FROM tidings_snapshots WHERE stream_id = ?"
_NO_LIMIT: Final = 2**62


def sqlite_path(path: str | Path) -> Path:
    """Return the file of a path or a ``sqlite:///relative`` / ``sqlite:////absolute`` URL."""
    if isinstance(path, str) and "://" in path:
        return path_from_url(path)
    return Path(path)


class SQLiteSnapshotStore(Resource, SnapshotStore):
    """A snapshot store in a SQLite file (the event store's file is the usual choice).

    Args:
        path: The database file, or a ``sqlite:///relative.db`` / ``sqlite:////abs.db`` URL.
    """

    def __init__(self, path: str | Path = "tidings.db") -> None:
        self.path = sqlite_path(path)
        self._conn = SQLiteThread(self.path, synchronous="NORMAL", name="tidings-snapshots")

    async def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._conn.start()
        await self._conn.run(lambda c: c.execute(_SCHEMA), "create snapshot table")

    async def _close(self) -> None:
        await self._conn.close()

    async def save(self, snapshot: Snapshot) -> None:
        """Store a snapshot, replacing one of the same stream and version."""
        await self._ensure_open()
        row = (
            snapshot.stream_id,
            snapshot.version,
            snapshot.schema_version,
            snapshot.state,
            snapshot.recorded_at_us,
        )
        await self._conn.run(lambda c: c.execute(_SAVE, row), "save snapshot")

    async def latest(self, stream_id: str, *, max_version: int | None = None) -> Snapshot | None:
        """Return the stream's newest snapshot at or below ``max_version`` (None: any)."""
        await self._ensure_open()
        bound = _NO_LIMIT if max_version is None else max_version
        return await self._conn.run(lambda c: _fetch(c, stream_id, bound), "read snapshot")

    async def delete(self, stream_id: str) -> None:
        """Remove every snapshot of a stream."""
        await self._ensure_open()
        await self._conn.run(lambda c: c.execute(_DELETE, (stream_id,)), "delete snapshots")


def _fetch(conn: sqlite3.Connection, stream_id: str, bound: int) -> Snapshot | None:
    row = conn.execute(_LATEST, (stream_id, bound)).fetchone()
    return None if row is None else Snapshot(row[0], row[1], row[2], bytes(row[3]), row[4])
