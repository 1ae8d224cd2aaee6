"""The tableless outbox on PostgreSQL: logical decoding messages instead of outbox rows.

Writer: `add` runs ``pg_logical_emit_message(true, prefix, payload)`` on the caller's
connection, inside the business transaction. The message lives only in the WAL: no table, no
index, no vacuum. Being transactional, it is decoded only if its transaction commits, at the
transaction's commit position, so readers see messages in commit order, overall and therefore
per aggregate. With ``channel`` set (the default), the same statement queues a NOTIFY, sent at
commit, that wakes relays at once (NOTIFY takes a database-wide lock at commit; pass
``channel=None`` when writers commit at very high rates and polling latency is enough).

Reader: `PostgresWalOutboxSource` is an `OutboxSource` over a logical replication slot with the
``pgoutput`` plugin (``messages 'true'``) and an empty publication of the same name. psycopg
has no replication protocol, so it uses the SQL interface:

- `fetch` *peeks* (``pg_logical_slot_peek_binary_changes``), which never consumes: a relay
  that dies before marking reads the same messages again. It returns whole transactions only,
  so a batch may exceed ``limit`` when one transaction holds more messages than that.
- `mark_relayed` advances the slot (``pg_replication_slot_advance``) past every transaction
  whose messages were all marked, in commit order. The new position survives the relay
  process and its connection at once; PostgreSQL itself writes it to disk at its next
  checkpoint, so a *server* crash may rewind the slot to that checkpoint and the messages
  since are relayed again (the broker's idempotent publish by event id absorbs that).
- A slot has one reader at a time: the source holds a session advisory lock keyed by the slot
  name for as long as its connection lives. Other sources on the slot are standbys: their
  `fetch` returns nothing (trying the lock again each time) until the active one goes away.

An unconsumed slot makes PostgreSQL keep all WAL since the slot's position: a relay that stops
for long fills the disk. `slot_status` reports the retained bytes and warns past
``max_retained_bytes``; `drop_slot` removes a slot no relay will read again. Logical decoding
needs ``wal_level = logical``; `open` says so clearly otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import psycopg
from psycopg import sql

from tidings.adapters.postgres.connection import Listener, conninfo_from_url, translate_errors
from tidings.adapters.postgres.sql import lock_key
from tidings.cdc.pgoutput import Begin, Commit, Message, PgOutputError, decode, format_lsn
from tidings.errors import ConfigurationError
from tidings.events import Event
from tidings.eventstore.base import DEFAULT_MAX_EVENT_BYTES
from tidings.eventstore.records import from_micros, to_micros
from tidings.lifecycle import Resource
from tidings.outbox.ports import OutboxMessage, OutboxSource, OutboxStatus
from tidings.outbox.rows import decode_payload, outbox_row

__all__ = [
    "DEFAULT_CHANNEL",
    "DEFAULT_PREFIX",
    "DEFAULT_SLOT",
    "PostgresWalOutbox",
    "PostgresWalOutboxSource",
    "WalSlotStatus",
    "add",
    "check_wal_level",
    "create_slot",
    "drop_slot",
]

DEFAULT_PREFIX: Final = "tidings.outbox"
"""The logical decoding message prefix outbox messages are written with."""
DEFAULT_CHANNEL: Final = "tidings_outbox_wal"
"""The NOTIFY channel writers announce commits on, and sources listen to."""
DEFAULT_SLOT: Final = "tidings_outbox"
"""The replication slot (and publication) a source reads when none is named."""

_VERSION: Final = 1
_PEEK_ROUNDS: Final = 4
_SLOT_NAME_MAX: Final = 63
_EMIT: Final = b"SELECT pg_logical_emit_message(true, %s, %s::bytea)"
_EMIT_NOTIFY: Final = b"SELECT pg_logical_emit_message(true, %s, %s::bytea), pg_notify(%s, '')"
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
_SLOT: Final = b"""
SELECT s.active, (pg_current_wal_lsn() - s.restart_lsn)::bigint,
    (pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint, s.wal_status, s.plugin
FROM pg_replication_slots AS s WHERE s.slot_name = %s AND s.database = current_database()"""
_CREATE_SLOT: Final = b"SELECT pg_create_logical_replication_slot(%s, 'pgoutput')"
_DROP_SLOT: Final = b"SELECT pg_drop_replication_slot(%s)"
_HAS_PUBLICATION: Final = b"SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %s)"
_TRY_LOCK: Final = b"SELECT pg_try_advisory_lock(%s)"
_UNLOCK: Final = b"SELECT pg_advisory_unlock(%s)"

logger = logging.getLogger(__name__)

AnyConn = psycopg.AsyncConnection[Any]


class _Payload(msgspec.Struct, array_like=True, frozen=True):
    """What one outbox message carries (msgpack, versioned by its first field)."""

    version: int
    topic: str
    key: str
    aggregate_type: str
    aggregate_id: str
    occurred_at_us: int
    flags: int
    envelope: str


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(_Payload)


def encode_payload(
    event: Event,
    *,
    topic: str,
    key: str | None = None,
    aggregate_type: str | None = None,
    aggregate_id: str | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> bytes:
    """Return the message content that carries ``event`` (defaults as for outbox rows)."""
    row = outbox_row(
        event,
        topic=topic,
        key=key,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        max_event_bytes=max_event_bytes,
    )
    payload = _Payload(
        _VERSION,
        row.topic,
        row.partition_key,
        row.aggregate_type,
        row.aggregate_id,
        to_micros(row.occurred_at),
        row.flags,
        row.payload,
    )
    return _encoder.encode(payload)


def decode_payload_message(content: bytes, position: int) -> OutboxMessage:
    """Return the outbox message a payload carries, at ``position`` (its LSN)."""
    try:
        payload = _decoder.decode(content)
    except msgspec.DecodeError as exc:
        raise PgOutputError(f"outbox message at {format_lsn(position)}: {exc}") from exc
    if payload.version != _VERSION:
        raise PgOutputError(
            f"outbox message at {format_lsn(position)} has version {payload.version}"
        )
    return OutboxMessage(
        event=decode_payload(payload.envelope, payload.flags),
        topic=payload.topic,
        key=payload.key,
        aggregate_type=payload.aggregate_type,
        aggregate_id=payload.aggregate_id,
        occurred_at=from_micros(payload.occurred_at_us),
        position=position,
    )


class PostgresWalOutbox:
    """Writes outbox messages to the WAL through the application's psycopg connection.

    Args:
        prefix: The message prefix (a source reads one prefix).
        channel: The NOTIFY channel to wake relays on at commit, or None (relays poll).
        max_event_bytes: The largest encoded event accepted.
    """

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        channel: str | None = DEFAULT_CHANNEL,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.prefix = prefix
        self.channel = channel
        self.max_event_bytes = max_event_bytes

    async def add(
        self,
        conn: AnyConn,
        event: Event,
        *,
        topic: str,
        key: str | None = None,
        aggregate_type: str | None = None,
        aggregate_id: str | None = None,
    ) -> None:
        """Write ``event`` for ``topic`` in the connection's current transaction.

        It becomes readable when that transaction commits, and never if it rolls back (on an
        autocommit connection outside a transaction it commits at once). Defaults of the key
        and the aggregate: `tidings.outbox.rows.outbox_row`. Driver errors are the
        application's to handle (they abort its transaction), so they are raised as psycopg
        raised them.

        Raises:
            ValueError: no aggregate id can be found, or the topic name is not valid.
            EventTooLargeError: the encoded event is over ``max_event_bytes``.
        """
        content = encode_payload(
            event,
            topic=topic,
            key=key,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            max_event_bytes=self.max_event_bytes,
        )
        if self.channel is None:
            await conn.execute(_EMIT, (self.prefix, content))
        else:
            await conn.execute(_EMIT_NOTIFY, (self.prefix, content, self.channel))


_default_writer: Final = PostgresWalOutbox()


async def add(
    conn: AnyConn,
    event: Event,
    *,
    topic: str,
    key: str | None = None,
    aggregate_type: str | None = None,
    aggregate_id: str | None = None,
) -> None:
    """`PostgresWalOutbox.add` with the default prefix and channel."""
    await _default_writer.add(
        conn, event, topic=topic, key=key, aggregate_type=aggregate_type, aggregate_id=aggregate_id
    )


@dataclass(frozen=True, slots=True)
class WalSlotStatus:
    """What a slot costs the server.

    Attributes:
        slot: The slot's name.
        active: Whether a session is reading it at this instant.
        retained_bytes: WAL the server keeps for it (from its restart position to now).
        unconsumed_bytes: WAL written since its confirmed position (all of it, not only
            outbox messages).
        wal_status: ``reserved``, ``extended``, ``unreserved`` or ``lost`` (PostgreSQL's).
    """

    slot: str
    active: bool
    retained_bytes: int
    unconsumed_bytes: int
    wal_status: str


def _check_slot_name(slot: str) -> str:
    if not (0 < len(slot) <= _SLOT_NAME_MAX) or not all(
        c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in slot
    ):
        raise ConfigurationError(f"slot name {slot!r} must be 1-63 of a-z, 0-9 and _")
    return slot


def _split_slot(url: str) -> tuple[str, str | None]:
    """Return the URL without its ``slot`` query parameter, and that parameter."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [value for name, value in query if name == "slot"]
    rest = urlencode([(name, value) for name, value in query if name != "slot"])
    return urlunsplit(parts._replace(query=rest)), named[-1] if named else None


async def create_slot(conn: AnyConn, slot: str, *, timeout: float = 30.0) -> bool:
    """Create the slot and its empty publication when missing; False when both existed.

    ``conn`` must be in autocommit mode. Creating a logical slot waits until every
    transaction running at that moment (prepared ones included) has ended; after
    ``timeout`` seconds it gives up with a `BackendError`.
    """
    _check_slot_name(slot)
    created = False
    with translate_errors():
        if not await _fetch_bool(conn, _HAS_PUBLICATION, slot):
            create = sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(slot))
            created = await _unless_exists(conn, create.as_bytes(conn))
        if await (await conn.execute(_SLOT, (slot,))).fetchone() is None:
            async with conn.transaction():
                await conn.execute(
                    sql.SQL("SET LOCAL statement_timeout = {}").format(int(timeout * 1000))
                )
                created = await _unless_exists(conn, _CREATE_SLOT, slot) or created
    return created


async def _unless_exists(conn: AnyConn, statement: bytes, *params: object) -> bool:
    """Run a CREATE; False when a concurrent session created the object first."""
    try:
        async with conn.transaction():  # a savepoint inside a transaction
            await conn.execute(statement, params or None)
    except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
        return False  # the slot says the former; a publication's catalog row the latter
    return True


async def drop_slot(conn: AnyConn, slot: str) -> bool:
    """Drop the slot and its publication (the WAL it kept is freed); False if neither existed.

    Raises:
        BackendError: a session is reading the slot right now.
    """
    _check_slot_name(slot)
    dropped = False
    with translate_errors():
        if await (await conn.execute(_SLOT, (slot,))).fetchone() is not None:
            await conn.execute(_DROP_SLOT, (slot,))
            dropped = True
        if await _fetch_bool(conn, _HAS_PUBLICATION, slot):
            await conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(slot)))
            dropped = True
    return dropped


async def _fetch_bool(conn: AnyConn, query: bytes, *params: object) -> bool:
    row = await (await conn.execute(query, params)).fetchone()
    return bool(row and row[0])


async def check_wal_level(conn: AnyConn) -> None:
    """Raise `ConfigurationError` unless the server runs with ``wal_level = logical``."""
    with translate_errors():
        row = await (await conn.execute(b"SHOW wal_level")).fetchone()
    level = row[0] if row else "unknown"
    if level != "logical":
        raise ConfigurationError(
            f"the tableless outbox needs wal_level = logical, but the server has {level!r}: "
            "set wal_level = logical in postgresql.conf and restart PostgreSQL"
        )


@dataclass(slots=True)
class _Txn:
    """One committed transaction as a source tracks it between fetch and mark."""

    end_lsn: int
    rows: int
    unmarked: set[int] = field(default_factory=set)
    released: bool = False

    @property
    def done(self) -> bool:
        return not self.released and not self.unmarked


@dataclass(slots=True)
class _Peeked:
    """What one peek decoded: whole transactions, and whether it reached the WAL's tip."""

    tip: int
    complete: bool
    txns: list[tuple[_Txn, list[OutboxMessage]]]


class PostgresWalOutboxSource(Resource, OutboxSource):
    """An `OutboxSource` over a logical replication slot (see the module docstring).

    Args:
        url: ``postgresql://user@host:port/dbname``: the database the writers write to; a
            ``slot`` query parameter names the slot (for the command line).
        slot: The slot's name (1-63 of a-z, 0-9, _); its publication has the same name. The
            default is the URL's ``slot``, else `DEFAULT_SLOT`.
        prefix: The message prefix the writers use; other messages are skipped.
        channel: The NOTIFY channel the writers use, or None to poll only.
        create: Create the slot and its publication on `open` when missing. Messages
            committed before the slot exists are never read: open a source (or call
            `create_slot`) before the writers start.
        max_retained_bytes: `slot_status` and `status` log a warning past this much WAL kept.

    Attributes:
        min_poll: First polling interval of `wait` after an empty fetch, in seconds.
        max_poll: Longest polling interval (the backoff doubles up to it).
        status_rows: Most decoded rows `status` reads to count the backlog.
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
    ) -> None:
        url, named = _split_slot(url)
        self.url = url
        self.slot = slot = _check_slot_name(slot or named or DEFAULT_SLOT)
        self.prefix = prefix
        self.channel = channel
        self.max_retained_bytes = max_retained_bytes
        self._create = create
        self._conninfo = conninfo_from_url(url)
        self._lock_key = lock_key("outbox_wal", slot)
        self._conn: AnyConn | None = None
        self._listener: Listener | None = None
        self._ops = asyncio.Lock()
        self._wake = asyncio.Event()
        self._poll = self.min_poll
        self._active = False
        self._txns: dict[int, _Txn] = {}
        self._txn_of: dict[int, int] = {}
        self._tip: int | None = None
        self._advanced = 0

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
            rows = sum(txn.rows for txn in self._txns.values()) + 3 * limit + 8
            for _ in range(_PEEK_ROUNDS):  # a wider window when others' messages fill it
                peeked = await self._peek(conn, rows)
                batch = self._take(peeked, limit)
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
            for message in messages:
                txn = self._txns.get(self._txn_of.pop(message.position, -1))
                if txn is not None:
                    txn.unmarked.discard(message.position)
            await self._advance(await self._connection())

    async def release(self, messages: Sequence[OutboxMessage]) -> None:
        """Give back the transactions these messages belong to; they are fetched again whole."""
        async with self._ops:
            for message in messages:
                txn = self._txns.get(self._txn_of.pop(message.position, -1))
                if txn is not None:
                    txn.released = True
                    for position in txn.unmarked:
                        self._txn_of.pop(position, None)
                    txn.unmarked.clear()
            self._tip = None

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

    async def slot_status(self) -> WalSlotStatus:
        """Return what the slot costs the server; log a warning past ``max_retained_bytes``."""
        await self._ensure_open()
        async with self._ops:
            conn = await self._connection()
            with translate_errors():
                row = await (await conn.execute(_SLOT, (self.slot,))).fetchone()
        if row is None:
            raise ConfigurationError(f"replication slot {self.slot!r} does not exist")
        active, retained, unconsumed, wal_status, plugin = row
        if plugin != "pgoutput":
            raise ConfigurationError(f"slot {self.slot!r} uses {plugin!r}, not pgoutput")
        status = WalSlotStatus(self.slot, active, retained or 0, unconsumed or 0, wal_status)
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
            dropped = await drop_slot(await self._connection(), self.slot)
            self._forget()
            return dropped

    async def _connection(self) -> AnyConn:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            await conn.close()
        self._active = False
        self._forget()
        with translate_errors():
            self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        return self._conn

    def _forget(self) -> None:
        self._txns.clear()
        self._txn_of.clear()
        self._tip = None
        self._advanced = 0

    async def _try_activate(self, conn: AnyConn) -> bool:
        with translate_errors():
            self._active = await _fetch_bool(conn, _TRY_LOCK, self._lock_key)
        if self._active:
            self._forget()
            logger.info("outbox slot %s: this source is now active", self.slot)
        return self._active

    async def _peek(self, conn: AnyConn, rows: int) -> _Peeked:
        params = {"slot": self.slot, "rows": rows, "publication": self.slot}
        records = await self._in_use_retrying(conn, _PEEK, params)
        data = [raw for _, raw in records if raw is not None]
        peeked = _Peeked(records[0][0], len(data) < rows, [])
        txn: _Txn | None = None
        batch: list[OutboxMessage] = []
        for raw in data:
            txn, batch = self._read(bytes(raw), txn, batch, peeked)
        return peeked

    def _read(
        self, raw: bytes, txn: _Txn | None, batch: list[OutboxMessage], peeked: _Peeked
    ) -> tuple[_Txn | None, list[OutboxMessage]]:
        if raw[:1] not in (b"B", b"C", b"M"):
            logger.warning("outbox slot %s: skipping a %r record", self.slot, raw[:1])
            return txn, batch
        record = decode(raw)
        if isinstance(record, Begin):
            return _Txn(end_lsn=0, rows=1), []
        if txn is None:  # a non-transactional message: not written by `add`
            return None, batch
        txn.rows += 1
        if isinstance(record, Message):
            if record.transactional and record.prefix == self.prefix:
                batch.append(decode_payload_message(record.content, record.lsn))
            return txn, batch
        assert isinstance(record, Commit)
        txn.end_lsn = record.end_lsn
        peeked.txns.append((txn, batch))
        return None, []

    def _take(self, peeked: _Peeked, limit: int) -> list[OutboxMessage]:
        taken: list[OutboxMessage] = []
        complete = peeked.complete
        for txn, messages in peeked.txns:
            known = self._txns.get(txn.end_lsn)
            if known is not None and not known.released:
                continue  # out with the relay, or marked and waiting for the slot to move
            if taken and len(taken) + len(messages) > limit:
                complete = False
                break
            txn.unmarked = {message.position for message in messages}
            self._txns[txn.end_lsn] = txn
            self._txn_of.update(dict.fromkeys(txn.unmarked, txn.end_lsn))
            taken.extend(messages)
        self._tip = peeked.tip if complete else None
        return taken

    async def _advance(self, conn: AnyConn) -> None:
        done: list[int] = []
        for end_lsn in sorted(self._txns):
            if not self._txns[end_lsn].done:
                break
            done.append(end_lsn)
        target = done[-1] if done else 0
        if len(done) == len(self._txns) and self._tip is not None:
            target = max(target, self._tip)
        if target > self._advanced:
            params = {"lsn": format_lsn(target), "slot": self.slot}
            await self._in_use_retrying(conn, _ADVANCE, params)
            self._advanced = target
        for end_lsn in done:
            del self._txns[end_lsn]

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
