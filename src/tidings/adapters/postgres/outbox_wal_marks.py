"""Marks that survive a PostgreSQL crash: each slot's marked position, committed to a table.

``pg_replication_slot_advance`` moves a slot in shared memory; PostgreSQL writes the new
position to disk only at its next checkpoint, so a server crash can rewind the slot and the
messages marked since are relayed again. With a `MarkTable`, a source also commits the position
after every mark (one row per slot, an upsert that never moves it back), and when it becomes
the slot's active reader it moves the slot forward to the committed position before reading.
A mark is then as durable as any commit (with ``synchronous_commit`` on, the default).

Why not ``CHECKPOINT`` after each mark: it needs superuser (or, from PostgreSQL 15, the
``pg_checkpoint`` role), and each one flushes every dirty buffer of the whole server and makes
the next change to every page write a full page image into the WAL: a cost paid by every
writer on the server, per relayed batch.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Final, LiteralString

import psycopg
from psycopg import sql

from tidings.adapters.postgres.connection import translate_errors
from tidings.cdc.pgoutput import format_lsn
from tidings.errors import ConfigurationError

__all__ = ["MarkTable"]

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CREATE: Final = """CREATE TABLE IF NOT EXISTS {table} (
    slot text PRIMARY KEY,
    lsn pg_lsn NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now())"""
_RECORD: Final = """INSERT INTO {table} AS m (slot, lsn) VALUES (%s, %s::pg_lsn)
ON CONFLICT (slot) DO UPDATE SET lsn = GREATEST(m.lsn, EXCLUDED.lsn), marked_at = now()"""
_READ: Final = "SELECT lsn::text FROM {table} WHERE slot = %s"
_FORGET: Final = "DELETE FROM {table} WHERE slot = %s"

AnyConn = psycopg.AsyncConnection[Any]


class MarkTable:
    """A table of slot name -> marked position (see the module docstring).

    Args:
        name: ``table`` or ``schema.table`` (letters, digits, underscore; the schema must
            exist). Several slots may share one table.

    Raises:
        ConfigurationError: the name is not of that form.
    """

    def __init__(self, name: str) -> None:
        parts = name.split(".")
        if len(parts) > 2 or not all(_NAME.fullmatch(part) for part in parts):
            raise ConfigurationError(f"mark table {name!r} must be 'table' or 'schema.table'")
        self.name = name
        self._table = sql.Identifier(*parts)

    async def create(self, conn: AnyConn) -> None:
        """Create the table when missing (safe when several sources open at once)."""
        # A concurrent CREATE ... IF NOT EXISTS may win the catalog row.
        with translate_errors(), contextlib.suppress(psycopg.errors.UniqueViolation):
            await conn.execute(self._sql(_CREATE))

    async def record(self, conn: AnyConn, slot: str, lsn: int) -> None:
        """Commit that ``slot`` was marked up to ``lsn`` (never moves a row back)."""
        with translate_errors():
            await conn.execute(self._sql(_RECORD), (slot, format_lsn(lsn)))

    async def read(self, conn: AnyConn, slot: str) -> str | None:
        """Return the committed position of ``slot`` (``X/Y`` text), or None."""
        with translate_errors():
            row = await (await conn.execute(self._sql(_READ), (slot,))).fetchone()
        return str(row[0]) if row else None

    async def forget(self, conn: AnyConn, slot: str) -> None:
        """Delete the row of ``slot`` (it was dropped)."""
        with translate_errors():
            await conn.execute(self._sql(_FORGET), (slot,))

    def _sql(self, template: LiteralString) -> sql.Composed:
        return sql.SQL(template).format(table=self._table)
