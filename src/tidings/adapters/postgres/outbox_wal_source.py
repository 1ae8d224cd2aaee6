"""The tableless outbox's reader: an `OutboxSource` over a logical replication slot.

psycopg has no replication protocol, so the source uses the SQL interface of logical decoding
with the ``pgoutput`` plugin (``messages 'true'``):

- `fetch` *peeks* (``pg_logical_slot_peek_binary_changes``), which never consumes: a relay
  that dies before marking reads the same messages again. It returns whole transactions only,
  so a batch may exceed ``limit`` when one transaction holds more messages than that.
- `mark_relayed` advances the slot (``pg_replication_slot_advance``) past every transaction
  whose messages were all marked, in commit order. The new position survives the relay
  process and its connection at once; PostgreSQL itself writes it to disk at its next
  checkpoint, so a *server* crash may rewind the slot to that checkpoint and the messages
  since are relayed again (the broker's idempotent publish by event id absorbs that). With
  ``mark_table`` set, each mark is also committed to a table and the slot is moved forward to
  it when a source becomes active, so marks survive a server crash too (`outbox_wal_marks`).
- A slot has one reader at a time: the source holds a session advisory lock keyed by the slot
  name for as long as its connection lives. Other sources on the slot are standbys: their
  `fetch` returns nothing (trying the lock again each time) until the active one goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import psycopg

from tidings.adapters.postgres.connection import Listener, conninfo_from_url, translate_errors
from tidings.adapters.postgres.outbox_wal_ledger import Peeked, TransactionLedger, read_peek
from tidings.adapters.postgres.outbox_wal_marks import MarkTable
from tidings.adapters.postgres.outbox_wal_slot import (
    DEFAULT_SLOT,
    WalSlotStatus,
    check_slot_name,
    check_wal_level,
    create_slot,
    drop_slot,
    slot_status,
    split_param,
)
from tidings.adapters.postgres.outbox_wal_writer import DEFAULT_CHANNEL, DEFAULT_PREFIX
from tidings.adapters.postgres.sql import lock_key
from tidings.cdc.pgoutput import format_lsn
from tidings.lifecycle import Resource
from tidings.outbox.ports import OutboxMessage, OutboxSource, OutboxStatus

__all__ = ["PostgresWalOutboxSource"]

_PEEK_ROUNDS: Final = 4
_PEEK: Final = b"""
SELECT (t.tip - '0/0'::pg_lsn)::bigint, c.data
FROM (SELECT pg_current_wal_flush_lsn() AS tip) AS t
LEFT JOIN LATERAL pg_logical_slot_peek_binary_changes(
    %(slot)s, t.tip, %(rows)s, 'proto_version', '1', 'publication_names', %(publication)s,
    'messages', 'true') AS c ON true"""
_ADVANCE: Final = b"""
SELECT 1 FROM pg_replication_slots AS s, LATERAL pg_replication_slot_advance(
    s.slot_name, GREATEST(%(lsn)s::pg_lsn, s.confirmed_flush_lsn))
WHERE s.slot_name = %(slot)s"""
_TRY_LOCK: Final = b"SELECT pg_try_advisory_lock(%s)"
_UNLOCK: Final = b"SELECT pg_advisory_unlock(%s)"
_LOCK_HELD: Final = b"""
SELECT EXISTS (SELECT 1 FROM pg_locks AS l JOIN pg_database AS d ON d.oid = l.database
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
    AND d.datname = current_database() AND l.classid = %s::bigint::oid
    AND l.objid = %s::bigint::oid)"""

logger = logging.getLogger(__name__)

AnyConn = psycopg.AsyncConnection[Any]


class PostgresWalOutboxSource(Resource, OutboxSource):
    """An `OutboxSource` over a logical replication slot (see the module docstring).

    Args:
        url: ``postgresql://user@host:port/dbname``: the database the writers write to; the
            query parameters ``slot`` and ``mark_table`` stand for the arguments of those
            names when they are not given (for the command line).
        slot: The slot's name (1-63 of a-z, 0-9, _); its publication has the same name. The
            default is the URL's ``slot``, else `DEFAULT_SLOT`.
        prefix: The message prefix the writers use; other messages are skipped.
        channel: The NOTIFY channel the writers use, or None to poll only.
        create: Create the slot and its publication on `open` when missing. Messages
            committed before the slot exists are never read: open a source (or call
            `create_slot`) before the writers start.
        max_retained_bytes: `slot_status` and `status` log a warning past this much WAL kept.
        mark_table: None (marks live in the slot: a server crash may undo the latest ones),
            or ``table`` / ``schema.table``: every mark is also committed to this table
            (created on `open` when missing), so marks survive a server crash as well.

    Attributes:
        min_poll: First polling interval of `wait` after an empty fetch, in seconds.
        max_poll: Longest polling interval (the backoff doubles up to it).
        status_rows: Most decoded rows `status` reads to count the backlog.
        in_use_retries: How often a query retries while another session decodes the slot.
    """

    min_poll: float = 0.05
    max_poll: float = 2.0
    status_rows: int = 100_000
    in_use_retries: int = 20

    def __init__(
        self,
        url: str,
        *,
        slot: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        channel: str | None = DEFAULT_CHANNEL,
        create: bool = True,
        max_retained_bytes: int = 1 << 30,
        mark_table: str | None = None,
    ) -> None:
        url, named = split_param(url, "slot")
        url, named_table = split_param(url, "mark_table")
        self.mark_table = mark_table = mark_table or named_table
        self.url = url
        self.slot = slot = check_slot_name(slot or named or DEFAULT_SLOT)
        self.prefix = prefix
        self.channel = channel
        self.max_retained_bytes = max_retained_bytes
        self._create = create
        self._marks = MarkTable(mark_table) if mark_table is not None else None
        self._conninfo = conninfo_from_url(url)
        self._lock_key = lock_key("outbox_wal", slot)
        self._conn: AnyConn | None = None
        self._listener: Listener | None = None
        self._ops = asyncio.Lock()
        self._wake = asyncio.Event()
        self._poll = self.min_poll
        self._active = False
        self._ledger = TransactionLedger()

    @property
    def active(self) -> bool:
        """Whether this source holds the slot (the others on it are standbys)."""
        return self._active

    async def activate(self) -> bool:
        """Try to become the slot's active reader now; return whether this source is it.

        `fetch` tries this itself; call it to learn at once whether a standby took over.
        """
        await self._ensure_open()
        async with self._ops:
            conn = await self._connection()
            return self._active or await self._try_activate(conn)

    async def _open(self) -> None:
        conn = await self._connection()
        try:
            await check_wal_level(conn)
            if self._create:
                await create_slot(conn, self.slot)
            if self._marks is not None:
                await self._marks.create(conn)
        except BaseException:
            await self._close()  # a failed open leaves nothing behind
            raise
        if self.channel is not None:
            self._listener = Listener(self._conninfo, self.channel, self._wake.set)
            self._listener.start()

    async def _close(self) -> None:
        if self._listener is not None:
            await self._listener.aclose()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._active and not conn.broken:
            # Ending the session frees the lock too, but a moment later: hand over now.
            with contextlib.suppress(psycopg.Error):
                await conn.execute(_UNLOCK, (self._lock_key,))
        self._active = False
        await conn.close()

    async def fetch(self, limit: int) -> Sequence[OutboxMessage]:
        """Return the next whole committed transactions' messages (about ``limit``)."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        await self._ensure_open()
        async with self._ops:
            self._wake.clear()
            conn = await self._connection()
            if not self._active and not await self._try_activate(conn):
                return []
            rows = self._ledger.rows_out + 3 * limit + 8
            for _ in range(_PEEK_ROUNDS):  # a wider window when others' messages fill it
                peeked = await self._peek(conn, rows)
                batch = self._ledger.take(peeked, limit)
                if batch or peeked.complete:
                    break
                rows *= 4
            await self._advance(conn)
        if batch:
            self._poll = self.min_poll
        return batch

    async def mark_relayed(self, messages: Sequence[OutboxMessage]) -> None:
        """Advance the slot past every transaction whose messages are now all marked."""
        await self._ensure_open()
        async with self._ops:
            self._ledger.mark(messages)
            await self._advance(await self._connection())

    async def release(self, messages: Sequence[OutboxMessage]) -> None:
        """Give back the transactions these messages belong to; they are fetched again whole."""
        async with self._ops:
            self._ledger.release(messages)

    async def wait(self, timeout: float) -> None:
        """Return on a writer's NOTIFY, or after the polling backoff, or ``timeout``."""
        await self._ensure_open()
        delay = min(timeout, self._poll)
        self._poll = min(self._poll * 2, self.max_poll)
        try:
            async with asyncio.timeout(max(delay, 0.0)):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def status(self) -> OutboxStatus:
        """Count the committed, unrelayed messages by peeking (at most `status_rows` rows)."""
        await self._ensure_open()
        async with self._ops:
            peeked = await self._peek(await self._connection(), self.status_rows)
        messages = [message for _, batch in peeked.txns for message in batch]
        oldest = min((m.occurred_at for m in messages), default=None)
        await self.slot_status()
        return OutboxStatus(backlog=len(messages), oldest=oldest, relayed=0)

    async def has_reader(self) -> bool:
        """Whether some source (this one or another) is the slot's active reader now.

        Unlike `WalSlotStatus.active` (a session decoding at this instant), this sees a relay
        between fetches too. It never takes the slot.
        """
        await self._ensure_open()
        unsigned = self._lock_key & 0xFFFF_FFFF_FFFF_FFFF  # pg_locks splits the key in two oids
        async with self._ops:
            conn = await self._connection()
            with translate_errors():
                params = (unsigned >> 32, unsigned & 0xFFFF_FFFF)
                row = await (await conn.execute(_LOCK_HELD, params)).fetchone()
        return bool(row and row[0])

    async def slot_status(self) -> WalSlotStatus:
        """Return what the slot costs the server; log a warning past ``max_retained_bytes``.

        Raises:
            ConfigurationError: the slot does not exist, or does not use pgoutput.
        """
        await self._ensure_open()
        async with self._ops:
            status = await slot_status(await self._connection(), self.slot)
        if status.retained_bytes > self.max_retained_bytes:
            logger.warning(
                "outbox slot %s keeps %d bytes of WAL (over %d): is its relay running?",
                self.slot,
                status.retained_bytes,
                self.max_retained_bytes,
            )
        return status

    async def create(self) -> bool:
        """Create the slot and its publication when missing; False when both existed."""
        await self._ensure_open()
        async with self._ops:
            return await create_slot(await self._connection(), self.slot)

    async def drop(self) -> bool:
        """Drop the slot and its publication: unrelayed messages are lost, the WAL freed."""
        await self._ensure_open()
        async with self._ops:
            conn = await self._connection()
            dropped = await drop_slot(conn, self.slot)
            if self._marks is not None:
                await self._marks.forget(conn, self.slot)
            self._ledger.forget()
            return dropped

    async def _connection(self) -> AnyConn:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            await conn.close()
        self._active = False
        self._ledger.forget()
        with translate_errors():
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        return self._conn

    async def _try_activate(self, conn: AnyConn) -> bool:
        with translate_errors():
            row = await (await conn.execute(_TRY_LOCK, (self._lock_key,))).fetchone()
        if row and row[0]:
            self._ledger.forget()
            await self._restore_mark(conn)  # if it fails, the next try locks (again) and retries
            self._active = True
            logger.info("outbox slot %s: this source is now active", self.slot)
        return self._active

    async def _restore_mark(self, conn: AnyConn) -> None:
        # After a server crash the slot may be behind the last committed mark: catch it up.
        marked = None if self._marks is None else await self._marks.read(conn, self.slot)
        if marked is not None:
            await self._in_use_retrying(conn, _ADVANCE, {"lsn": marked, "slot": self.slot})

    async def _peek(self, conn: AnyConn, rows: int) -> Peeked:
        params = {"slot": self.slot, "rows": rows, "publication": self.slot}
        records = await self._in_use_retrying(conn, _PEEK, params)
        data = [bytes(raw) for _, raw in records if raw is not None]
        tip = records[0][0]
        return read_peek(tip, len(data) < rows, data, prefix=self.prefix, slot=self.slot)

    async def _advance(self, conn: AnyConn) -> None:
        target = self._ledger.target()
        if target is not None:
            params = {"lsn": format_lsn(target), "slot": self.slot}
            await self._in_use_retrying(conn, _ADVANCE, params)
        marked = self._ledger.advanced(target)
        if marked and target is not None and self._marks is not None:
            await self._marks.record(conn, self.slot, target)

    async def _in_use_retrying(
        self, conn: AnyConn, query: bytes, params: Mapping[str, object]
    ) -> list[tuple[Any, ...]]:
        # A slot serves one session per call: a status() from elsewhere may hold it briefly.
        for attempt in range(self.in_use_retries):
            try:
                with translate_errors():
                    return await (await conn.execute(query, params)).fetchall()
            except Exception as exc:
                cause = exc.__cause__
                in_use = isinstance(cause, psycopg.errors.ObjectInUse)
                if not in_use or attempt == self.in_use_retries - 1:
                    raise
            await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")
