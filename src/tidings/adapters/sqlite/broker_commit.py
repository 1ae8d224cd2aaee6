"""Group commit for the SQLite broker: many small writes, one transaction, one fsync.

Publishes, claims and settlements from every task of the process queue up here; one flusher
hands everything queued to the writer thread, which runs each operation inside its own
SAVEPOINT (so a failing one is rolled back alone) and commits them together. SQLite admits one
writer at a time across processes, and every operation reads what it depends on inside the
``BEGIN IMMEDIATE`` transaction, so operations from several processes interleave safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final, Generic, TypeVar

from tidings.adapters.sqlite.connection import SQLiteThread, translate_errors

__all__ = ["GroupCommit", "Work", "now_us"]

T = TypeVar("T")
Work = Callable[[sqlite3.Connection, int], T]
"""An operation: runs on the writer thread inside the transaction, given the time in µs."""

_MAX_BATCH: Final = 1024


def now_us() -> int:
    """Return the wall-clock time in microseconds (shared by every process on the machine)."""
    return time.time_ns() // 1000


@dataclass(slots=True)
class _Queued(Generic[T]):
    work: Work[T]
    future: asyncio.Future[T]
    single: bool  # one statement: atomic by itself, no savepoint needed


class GroupCommit:
    """Runs write operations on one connection, as many per transaction as are waiting."""

    def __init__(self, writer: SQLiteThread) -> None:
        self._writer = writer
        self._queue: list[_Queued[object]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, work: Work[T]) -> T:
        """Queue ``work`` for the next transaction; return its result once committed."""
        return await self.submit(work)

    def submit(self, work: Work[T], *, single: bool = False) -> asyncio.Future[T]:
        """Queue ``work`` for the next transaction and return at once, with its future.

        Work submitted later is committed in the same transaction or a later one, never an
        earlier one, so the order of submissions is the order of their effects. ``single``
        work runs one statement, which SQLite undoes by itself when it fails: it runs without
        a savepoint of its own.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(work, future, single))  # type: ignore[arg-type]
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def drain(self) -> None:
        """Wait until everything queued so far is committed (or failed)."""
        if self._flusher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            try:
                work = partial(_commit, batch=batch)
                outcomes = await self._writer.run(work, "broker commit")
            except Exception as exc:  # the commit itself failed: every operation in it failed
                outcomes = [exc] * len(batch)
            for queued, outcome in zip(batch, outcomes, strict=True):
                if queued.future.done():
                    continue  # its caller was cancelled
                if isinstance(outcome, BaseException):
                    queued.future.set_exception(outcome)
                else:
                    queued.future.set_result(outcome)


def _commit(conn: sqlite3.Connection, *, batch: list[_Queued[object]]) -> list[object]:
    """Run every operation of a batch in one transaction, each in its own savepoint."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        now = now_us()
        outcomes = [_one(conn, queued, now) for queued in batch]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _one(conn: sqlite3.Connection, queued: _Queued[object], now: int) -> object:
    if queued.single:
        return _attempt(conn, queued.work, now)
    conn.execute("SAVEPOINT op")
    outcome = _attempt(conn, queued.work, now)
    if isinstance(outcome, Exception):
        conn.execute("ROLLBACK TO op")
    conn.execute("RELEASE op")
    return outcome


def _attempt(conn: sqlite3.Connection, work: Work[object], now: int) -> object:
    """Return what the work returns, or the (translated) exception it raised."""
    try:
        with translate_errors(getattr(getattr(work, "func", work), "__name__", "write")):
            return work(conn, now)
    except Exception as exc:
        return exc
