"""Subject keys in SQLite (table ``tidings_subject_keys``), usually in the event store's file.

Forgetting must leave no copy of a key behind in the file: the connection runs with
``secure_delete`` (freed content is overwritten with zeros) and checkpoints the write-ahead log
after each deletion, so the page that held the key is rewritten in the database file. Frames
in the WAL file are overwritten as the WAL is reused; copies of the file (backups) keep the
key until they expire.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Final

from tidings.adapters.sqlite.connection import SQLiteThread
from tidings.adapters.sqlite.snapshots import sqlite_path
from tidings.domain.keys import KeyStore, new_key
from tidings.lifecycle import Resource

__all__ = ["SQLiteKeyStore"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tidings_subject_keys (
    subject TEXT PRIMARY KEY,
    key BLOB NOT NULL,
    created_at_us INTEGER NOT NULL
)"""
_GET: Final = "SELECT key FROM tidings_subject_keys WHERE subject = ?"
_INSERT: Final = """
INSERT INTO tidings_subject_keys (subject, key, created_at_us) VALUES (?, ?, ?)
ON CONFLICT (subject) DO NOTHING"""
_DELETE: Final = "DELETE FROM tidings_subject_keys WHERE subject = ?"


class SQLiteKeyStore(Resource, KeyStore):
    """A key store in a SQLite file.

    Args:
        path: The database file, or a ``sqlite:///relative.db`` / ``sqlite:////abs.db`` URL.
    """

    def __init__(self, path: str | Path = "tidings.db") -> None:
        self.path = sqlite_path(path)
        self._conn = SQLiteThread(self.path, name="tidings-keys")

    async def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._conn.start()
        await self._conn.run(_prepare, "create key table")

    async def _close(self) -> None:
        await self._conn.close()

    async def get_or_create(self, subject: str) -> bytes:
        """Return the subject's key, creating a random one first when it has none."""
        key = await self.get(subject)
        if key is not None:
            return key
        fresh = new_key()
        return await self._conn.run(lambda c: _create(c, subject, fresh), "create key")

    async def get(self, subject: str) -> bytes | None:
        """Return the subject's key, or None."""
        await self._ensure_open()
        return await self._conn.run(lambda c: _get(c, subject), "read key")

    async def forget(self, subject: str) -> bool:
        """Delete the subject's key (and its bytes from the file); True when there was one."""
        await self._ensure_open()
        return await self._conn.run(lambda c: _forget(c, subject), "forget key")


def _prepare(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute(_SCHEMA)


def _get(conn: sqlite3.Connection, subject: str) -> bytes | None:
    row = conn.execute(_GET, (subject,)).fetchone()
    return None if row is None else bytes(row[0])


def _create(conn: sqlite3.Connection, subject: str, key: bytes) -> bytes:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_INSERT, (subject, key, time.time_ns() // 1000))
        stored = _get(conn, subject)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    assert stored is not None
    return stored


def _forget(conn: sqlite3.Connection, subject: str) -> bool:
    deleted = conn.execute(_DELETE, (subject,)).rowcount > 0
    if deleted:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return deleted
