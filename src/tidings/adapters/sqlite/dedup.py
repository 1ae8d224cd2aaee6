"""Processed keys and the inbox in SQLite (table ``tidings_dedup``), often in the broker's file.

Writes go through a group commit (`tidings.adapters.sqlite.broker_commit.GroupCommit`): the
claims, records and inbox transactions of every task of the process that are waiting share one
``BEGIN IMMEDIATE`` transaction and one fsync, each in its own savepoint, so one that fails
(or finds its key done) is rolled back alone.

An inbox transaction (`SQLiteInboxTx`) queues the handler's writes and runs them on the
writer thread at commit, right after inserting the key, in one savepoint: the key and the
effects commit together or not at all. A redelivery (``attempt`` above 1) whose key is done is
found before the block runs (one read of the committed rows, shared by concurrent lookups);
any other duplicate (a replay, which counts attempts from 1 again, or a concurrent
transaction that won) is found at commit, which then drops the block's writes. First
deliveries, nearly all of them, thus cost no read. Expiry uses the machine's wall clock.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

from tidings.adapters.sqlite.broker_commit import GroupCommit, now_us
from tidings.adapters.sqlite.connection import SQLiteThread, Synchronous, path_from_url
from tidings.idempotency.batching import Coalesced
from tidings.idempotency.inbox import Inbox, InboxBase, InboxTx
from tidings.idempotency.ports import (
    DEFAULT_LEASE,
    DEFAULT_TTL,
    AlreadyProcessed,
    Claim,
    DedupStore,
    inbox_key,
    ttl_seconds,
)
from tidings.lifecycle import Resource
from tidings.messaging.ports import Delivery

__all__ = ["SQLiteDedupStore", "SQLiteInbox", "SQLiteInboxTx"]

Op = Callable[[sqlite3.Connection], object]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tidings_dedup (
    key TEXT PRIMARY KEY,
    done INTEGER NOT NULL,
    owner TEXT,
    expires_at_us INTEGER,
    outcome BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tidings_dedup_expiry ON tidings_dedup (expires_at_us)
    WHERE expires_at_us IS NOT NULL;
"""
_CLAIM: Final = """
INSERT INTO tidings_dedup (key, done, owner, expires_at_us) VALUES (:key, 0, :owner, :expires)
ON CONFLICT (key) DO UPDATE SET done = 0, owner = excluded.owner,
    expires_at_us = excluded.expires_at_us, outcome = NULL
WHERE NOT (expires_at_us IS NULL OR expires_at_us > :now) OR (done = 0 AND owner = :owner)"""
_RECORD: Final = """
INSERT INTO tidings_dedup (key, done, owner, expires_at_us, outcome)
VALUES (:key, 1, NULL, :expires, :outcome)
ON CONFLICT (key) DO UPDATE SET done = 1, owner = NULL,
    expires_at_us = excluded.expires_at_us, outcome = excluded.outcome
WHERE NOT (done = 1 AND (expires_at_us IS NULL OR expires_at_us > :now))"""
_STATE: Final = """
SELECT done, outcome FROM tidings_dedup
WHERE key = :key AND (expires_at_us IS NULL OR expires_at_us > :now)"""
_RELEASE: Final = """
DELETE FROM tidings_dedup WHERE key = :key AND done = 0 AND owner = :owner
    AND (expires_at_us IS NULL OR expires_at_us > :now)"""
_STATES: Final = """
SELECT key, done, outcome FROM tidings_dedup
WHERE key IN ({marks}) AND (expires_at_us IS NULL OR expires_at_us > ?)"""
_CHUNK: Final = 500
_PURGE: Final = """
DELETE FROM tidings_dedup WHERE key IN (
    SELECT key FROM tidings_dedup WHERE expires_at_us <= :now LIMIT :limit)"""
_US: Final = 1_000_000


def _expiry(now: int, seconds: float | None) -> int | None:
    return None if seconds is None else now + int(seconds * _US)


def _state(conn: sqlite3.Connection, key: str, now: int) -> tuple[bool, bytes | None] | None:
    """Return (done, outcome) of a live key, or None when it is absent or expired."""
    row = conn.execute(_STATE, {"key": key, "now": now}).fetchone()
    return None if row is None else (bool(row[0]), row[1])


def _states(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, tuple[bool, bytes | None]]:
    """Return (done, outcome) of every live key among ``keys``."""
    now, found = now_us(), {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        query = _STATES.format(marks=marks)
        for key, done, outcome in conn.execute(query, (*chunk, now)):
            found[key] = (bool(done), outcome)
    return found


def _claim(conn: sqlite3.Connection, now: int, *, key: str, owner: str, lease: float) -> Claim:
    params = {"key": key, "owner": owner, "expires": _expiry(now, lease), "now": now}
    if conn.execute(_CLAIM, params).rowcount:
        return Claim.ACQUIRED
    found = _state(conn, key, now)
    return Claim.DONE if found is not None and found[0] else Claim.BUSY


def _record(
    conn: sqlite3.Connection, now: int, *, key: str, ttl: float | None, outcome: bytes | None
) -> bool:
    params = {"key": key, "expires": _expiry(now, ttl), "outcome": outcome, "now": now}
    return bool(conn.execute(_RECORD, params).rowcount)


def _commit_tx(
    conn: sqlite3.Connection,
    now: int,
    *,
    tx: SQLiteInboxTx,
    ttl: float | None,
    hook: Callable[[], None] | None,
) -> tuple[bytes | None] | None:
    """Insert the key, then run the queued writes; if the key was done, return its outcome."""
    if not _record(conn, now, key=tx.key, ttl=ttl, outcome=tx.outcome):
        found = _state(conn, tx.key, now)
        return (None if found is None else found[1],)
    for op in tx.ops:
        op(conn)
    if hook is not None:
        hook()
    return None


class SQLiteDedupStore(Resource, DedupStore):
    """A dedup store in a SQLite file.

    Args:
        path: The database file, or a ``sqlite:///relative.db`` / ``sqlite:////abs.db`` URL.
        synchronous: SQLite's durability setting; ``FULL`` (default) fsyncs every commit, so
            a record survives power loss; ``NORMAL`` survives a process crash only.
    """

    def __init__(self, path: str | Path = "tidings.db", *, synchronous: Synchronous = "FULL"):
        is_url = isinstance(path, str) and "://" in path
        self.path = path_from_url(str(path)) if is_url else Path(path)
        self._writer = SQLiteThread(self.path, synchronous=synchronous, name="tidings-dedup")
        self._commit = GroupCommit(self._writer)

    async def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._writer.start()
        await self._writer.run(lambda c: c.executescript(_SCHEMA), "create dedup table")

    async def _close(self) -> None:
        await self._commit.drain()
        await self._writer.close()

    async def _write(self, work: Callable[[sqlite3.Connection, int], Any]) -> Any:
        await self._ensure_open()
        return await self._commit.run(work)

    async def _read(self, key: str) -> tuple[bool, bytes | None] | None:
        await self._ensure_open()
        return await self._writer.run(lambda c: _state(c, key, now_us()), "read dedup key")

    async def claim(self, key: str, owner: str, *, lease: float = DEFAULT_LEASE) -> Claim:
        """Claim a free or expired key (or renew one's own claim) for ``lease`` seconds."""
        claimed: Claim = await self._write(partial(_claim, key=key, owner=owner, lease=lease))
        return claimed

    async def record(self, key: str, *, ttl: float | None = DEFAULT_TTL) -> bool:
        """Mark the key done for ``ttl`` seconds; False when it was done already."""
        ttl = ttl_seconds(ttl)
        return bool(await self._write(partial(_record, key=key, ttl=ttl, outcome=None)))

    async def seen(self, key: str) -> bool:
        """Return True when the key is done and not expired."""
        found = await self._read(key)
        return found is not None and found[0]

    async def release(self, key: str, owner: str) -> bool:
        """Drop ``owner``'s claim on the key; False when it held none."""

        def release(conn: sqlite3.Connection, now: int) -> bool:
            params = {"key": key, "owner": owner, "now": now}
            return bool(conn.execute(_RELEASE, params).rowcount)

        return bool(await self._write(release))

    async def purge(self, *, batch_size: int = 1000) -> int:
        """Delete every expired key, ``batch_size`` per transaction; return how many."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        def purge(conn: sqlite3.Connection, now: int) -> int:
            return conn.execute(_PURGE, {"now": now, "limit": batch_size}).rowcount

        total = 0
        while (deleted := int(await self._write(purge))) > 0:
            total += deleted
            if deleted < batch_size:
                break
        return total


class SQLiteInboxTx(InboxTx):
    """A handler's writes, queued, to run in the inbox's transaction when the block ends.

    `execute`, `executemany` and `call` queue; nothing runs until the commit, on the writer
    thread, in order. `fetchall` reads the committed rows (not this transaction's writes);
    read-modify-write belongs in SQL (``UPDATE ... SET n = n + 1``, an upsert) or in `call`.
    """

    def __init__(self, inbox: SQLiteInbox, key: str) -> None:
        super().__init__(inbox, key)
        self.ops: list[Op] = []
        self._inbox = inbox

    def execute(self, sql: str, params: Sequence[object] | dict[str, object] = ()) -> None:
        """Queue one statement."""
        self.ops.append(lambda conn: conn.execute(sql, params))

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Queue one statement for each row."""
        self.ops.append(lambda conn: conn.executemany(sql, rows))

    def call(self, fn: Op) -> None:
        """Queue ``fn(connection)``, run on the writer thread inside the transaction."""
        self.ops.append(fn)

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a query over the committed rows and return them."""
        return await self._inbox.fetchall(sql, params)


class SQLiteInbox(InboxBase[SQLiteInboxTx], SQLiteDedupStore, Inbox[SQLiteInboxTx]):
    """An inbox in a SQLite file: the keys in ``tidings_dedup``, the effects in your tables.

    Args:
        path: The database file holding the effects' tables, or a ``sqlite:///`` URL.
        synchronous: As for `SQLiteDedupStore`; ``NORMAL`` keeps exactly-once effects across
            process crashes (the key and the effects roll back together).
    """

    tx_class = SQLiteInboxTx

    def __init__(self, path: str | Path = "tidings.db", *, synchronous: Synchronous = "FULL"):
        super().__init__(path, synchronous=synchronous)
        self._reader = SQLiteThread(self.path, read_only=True, name="tidings-inbox-reader")
        self._lookups: Coalesced[tuple[bool, bytes | None]] = Coalesced(self._states)
        self.before_commit: Callable[[], None] | None = None
        """Fault injection: called on the writer thread after a transaction's writes."""

    async def _open(self) -> None:
        await super()._open()
        await self._reader.start()

    async def _close(self) -> None:
        await self._reader.close()
        await super()._close()

    async def _states(self, keys: list[str]) -> dict[str, tuple[bool, bytes | None]]:
        found: dict[str, tuple[bool, bytes | None]] = await self._reader.run(
            partial(_states, keys=keys), "inbox check"
        )
        return found

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a query over the committed rows (on a read-only connection) and return them."""
        await self._ensure_open()
        rows: list[tuple[Any, ...]] = await self._reader.run(
            lambda c: c.execute(sql, params).fetchall(), "inbox query"
        )
        return rows

    @contextlib.asynccontextmanager
    async def transaction(
        self,
        delivery: Delivery,
        *,
        consumer: str,
        key: str | None = None,
        ttl: float | None = DEFAULT_TTL,
        ack: bool = True,
    ) -> AsyncIterator[SQLiteInboxTx]:
        """Queue the block's writes; commit them with the key; ack (see `Inbox.transaction`)."""
        stored = inbox_key(consumer, key or delivery.event.id)
        ttl = ttl_seconds(ttl)
        await self._ensure_open()
        # Only a delivery made before may find its key done; a first one learns it at commit.
        found = await self._lookups.get(stored) if delivery.attempt > 1 else None
        if found is not None and found[0]:
            await _ack_if(ack, delivery)
            raise AlreadyProcessed(stored, found[1])
        tx = SQLiteInboxTx(self, stored)
        yield tx
        duplicate = await self._write(partial(_commit_tx, tx=tx, ttl=ttl, hook=self.before_commit))
        await _ack_if(ack, delivery)
        if duplicate is not None:
            raise AlreadyProcessed(stored, duplicate[0])


async def _ack_if(ack: bool, delivery: Delivery) -> None:
    if ack:
        await delivery.ack()
