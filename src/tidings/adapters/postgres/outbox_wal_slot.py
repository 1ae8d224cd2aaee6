"""Replication slot administration for the tableless outbox: create, drop, inspect.

A source reads a logical replication slot with the ``pgoutput`` plugin and an empty
publication of the same name (pgoutput requires a publication; an empty one publishes no table
changes). A slot makes PostgreSQL keep all WAL since the slot's position, so a slot no relay
reads fills the disk: `slot_status` says what it keeps, `drop_slot` frees it. Logical decoding
needs ``wal_level = logical``; `check_wal_level` says so clearly otherwise. Every function
takes a psycopg connection in autocommit mode and raises `BackendError` for driver errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tidings.adapters.postgres.connection import translate_errors
from tidings.errors import ConfigurationError

__all__ = [
    "DEFAULT_SLOT",
    "WalSlotStatus",
    "check_slot_name",
    "check_wal_level",
    "create_slot",
    "drop_slot",
    "slot_status",
    "split_param",
]

DEFAULT_SLOT: Final = "tidings_outbox"
"""The replication slot (and publication) a source reads when none is named."""

_SLOT_NAME_MAX: Final = 63
_SLOT: Final = b"""
SELECT s.active, (pg_current_wal_lsn() - s.restart_lsn)::bigint,
    (pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint, s.wal_status, s.plugin
FROM pg_replication_slots AS s WHERE s.slot_name = %s AND s.database = current_database()"""
_CREATE_SLOT: Final = b"SELECT pg_create_logical_replication_slot(%s, 'pgoutput')"
_DROP_SLOT: Final = b"SELECT pg_drop_replication_slot(%s)"
_HAS_PUBLICATION: Final = b"SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %s)"

AnyConn = psycopg.AsyncConnection[Any]


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


def check_slot_name(slot: str) -> str:
    """Return ``slot`` if it is 1-63 of a-z, 0-9 and _; else raise `ConfigurationError`."""
    if not (0 < len(slot) <= _SLOT_NAME_MAX) or not all(
        c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in slot
    ):
        raise ConfigurationError(f"slot name {slot!r} must be 1-63 of a-z, 0-9 and _")
    return slot


def split_param(url: str, param: str) -> tuple[str, str | None]:
    """Return the URL without the query parameter ``param``, and its (last) value or None."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [value for name, value in query if name == param]
    rest = urlencode([(name, value) for name, value in query if name != param])
    return urlunsplit(parts._replace(query=rest)), named[-1] if named else None


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


async def create_slot(conn: AnyConn, slot: str, *, timeout: float = 30.0) -> bool:
    """Create the slot and its empty publication when missing; False when both existed.

    Safe when several sessions create the same slot at once. Creating a logical slot waits
    until every transaction running at that moment (prepared ones included) has ended; after
    ``timeout`` seconds it gives up with a `BackendError`.
    """
    check_slot_name(slot)
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


async def drop_slot(conn: AnyConn, slot: str) -> bool:
    """Drop the slot and its publication (the WAL it kept is freed); False if neither existed.

    Raises:
        BackendError: a session is reading the slot right now.
    """
    check_slot_name(slot)
    dropped = False
    with translate_errors():
        if await (await conn.execute(_SLOT, (slot,))).fetchone() is not None:
            await conn.execute(_DROP_SLOT, (slot,))
            dropped = True
        if await _fetch_bool(conn, _HAS_PUBLICATION, slot):
            await conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(slot)))
            dropped = True
    return dropped


async def slot_status(conn: AnyConn, slot: str) -> WalSlotStatus:
    """Return what the slot (in the connection's database) costs the server.

    Raises:
        ConfigurationError: the slot does not exist, or does not use pgoutput.
    """
    with translate_errors():
        row = await (await conn.execute(_SLOT, (slot,))).fetchone()
    if row is None:
        raise ConfigurationError(f"replication slot {slot!r} does not exist")
    active, retained, unconsumed, wal_status, plugin = row
    if plugin != "pgoutput":
        raise ConfigurationError(f"slot {slot!r} uses {plugin!r}, not pgoutput")
    return WalSlotStatus(slot, active, retained or 0, unconsumed or 0, wal_status)


async def _unless_exists(conn: AnyConn, statement: bytes, *params: object) -> bool:
    """Run a CREATE; False when a concurrent session created the object first."""
    try:
        async with conn.transaction():  # a savepoint inside a transaction
            await conn.execute(statement, params or None)
    except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
        return False  # the slot says the former; a publication's catalog row the latter
    return True


async def _fetch_bool(conn: AnyConn, query: bytes, *params: object) -> bool:
    row = await (await conn.execute(query, params)).fetchone()
    return bool(row and row[0])
