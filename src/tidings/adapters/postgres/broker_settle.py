"""Settlements in batches: concurrent acks, nacks and extends of one process share a commit.

A consumer that acks one delivery at a time must not pay a round trip and a commit per event.
`Settlements` queues each settlement and a flusher commits everything queued in one
transaction: every ack of the batch in one ``DELETE ... USING unnest(...)``, each nack or
extend in a statement of its own, all sent in one pipeline. An ack is terminal (a delivery is
settled once), so running the batch's nacks and extends before its acks changes no outcome.
Each settlement only changes an entry still held under its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Literal, NamedTuple

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from tidings.adapters.postgres.broker_sql import BrokerStatements

__all__ = [
    "Settlement",
    "Settlements",
    "apply",
    "array_literal",
    "commit_batch",
    "fail",
    "finish",
]

Conn = AsyncConnection[TupleRow]
_log: Final = logging.getLogger(__name__)
_MAX_BATCH: Final = 4096


class Settlement(NamedTuple):
    """One settlement of one pending entry (``micros``: the delay or the extension)."""

    kind: Literal["ack", "nack", "extend"]
    group_id: int
    partition: int
    offset: int
    lease: int
    micros: int = 0


async def commit_batch(conn: Conn, s: BrokerStatements, batch: list[Settlement]) -> None:
    """Apply a batch of settlements in one transaction."""
    async with conn.pipeline(), conn.transaction():
        await apply(conn, s, batch)


async def apply(conn: Conn, s: BrokerStatements, batch: list[Settlement]) -> None:
    """Send the statements of a batch (in the caller's transaction and pipeline)."""
    acks = [item for item in batch if item.kind == "ack"]
    for item in batch:
        if item.kind != "ack":
            where = (item.group_id, item.partition, item.offset, item.lease)
            statement = s.nack if item.kind == "nack" else s.extend
            await conn.execute(statement, (item.micros, *where))
    if len(acks) == 1:
        one = acks[0]
        await conn.execute(s.ack_one, (one.group_id, one.partition, one.offset, one.lease))
    elif acks:
        fields = ("group_id", "partition", "offset", "lease")
        columns = [array_literal([getattr(a, name) for a in acks]) for name in fields]
        await conn.execute(s.ack, columns)


def array_literal(values: list[int]) -> str:
    """Return integers as an array literal (cheaper to send than a list adapted per item)."""
    return "{" + ",".join(map(str, values)) + "}"


_Queued = tuple[Settlement, "asyncio.Future[None] | None"]
"""A queued settlement and the future its caller awaits (None: nobody awaits it)."""


class Settlements:
    """Queues settlements and commits them in batches through ``commit``, one at a time."""

    def __init__(self, commit: Callable[[list[Settlement]], Awaitable[None]]) -> None:
        self._commit = commit
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._flusher_busy = False

    def submit(self, settlement: Settlement, *, wait: bool) -> asyncio.Future[None] | None:
        """Queue a settlement for the next batch.

        With ``wait``, return a future that resolves once it is committed; without, return
        None (a batch that fails to commit is logged: its deliveries simply come back).
        """
        future = asyncio.get_running_loop().create_future() if wait else None
        self._queue.append((settlement, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="tidings-pg-settle")
        return future

    def take(self, group_id: int) -> list[_Queued]:
        """Remove and return what is queued for a group, for the caller to commit with a claim.

        The caller must resolve every future once committed (`finish`), or `requeue` them.
        """
        if self._flusher is not None and not self._flusher.done() and self._flusher_busy:
            return []  # a batch is being committed: later ones must not overtake it
        taken = [queued for queued in self._queue if queued[0].group_id == group_id]
        if taken:
            self._queue = [queued for queued in self._queue if queued[0].group_id != group_id]
        return taken

    def requeue(self, taken: list[_Queued]) -> None:
        """Queue again, first, what `take` returned and its caller could not commit.

        Committing one twice is harmless: each changes only an entry held under its lease.
        """
        if taken:
            self._queue[:0] = taken
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush(), name="tidings-pg-settle")

    async def drain(self) -> None:
        """Wait until everything queued so far is committed (or failed)."""
        while self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            self._flusher_busy = True
            try:
                await self._commit([settlement for settlement, _ in batch])
            except Exception as exc:  # the batch's transaction failed as a whole
                fail(batch, exc)
                continue
            finally:
                self._flusher_busy = False
            finish(batch)


def finish(batch: list[_Queued]) -> None:
    """Resolve the futures of a committed batch."""
    for _, future in batch:
        if future is not None and not future.done():
            future.set_result(None)


def fail(batch: list[_Queued], exc: BaseException) -> None:
    """Fail the futures of a batch that was not committed; log it if nobody awaits one."""
    if any(future is None for _, future in batch):
        _log.warning("%d settlements were not committed: %s", len(batch), exc)
    for _, future in batch:
        if future is not None and not future.done():
            future.set_exception(exc)
