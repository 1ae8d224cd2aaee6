"""Natural idempotency: writes that give the same result however often they run.

The cheapest exactly-once effect is one that may run twice. An upsert keyed by what the event
is about (``INSERT ... ON CONFLICT (key) DO UPDATE``) writes the same row on a redelivery; with
a *guard* on a version or a position that only grows, an older event delivered late cannot
overwrite a newer one either::

    sql = upsert("orders", ["order_id", "status", "version"], key=["order_id"], newer="version")
    tx.execute(sql, (order.id, "shipped", record.position))

The statement is the same on SQLite (3.24+) and PostgreSQL; only the parameter marker differs
(``?`` for sqlite3, ``%s`` for psycopg). Counters (``n = n + 1``) and appends are not
idempotent: put them behind the inbox.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Literal

__all__ = ["quote", "upsert"]

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def quote(name: str) -> str:
    """Return ``name`` as a quoted SQL identifier; a dotted name quotes each part."""
    parts = name.split(".")
    for part in parts:
        if not _IDENTIFIER.fullmatch(part):
            raise ValueError(f"{name!r} is not a plain SQL identifier")
    return ".".join(f'"{part}"' for part in parts)


def upsert(
    table: str,
    columns: Sequence[str],
    *,
    key: Sequence[str],
    update: Sequence[str] | None = None,
    newer: str | None = None,
    marker: Literal["?", "%s"] = "?",
) -> str:
    """Return an ``INSERT ... ON CONFLICT (key) DO UPDATE`` statement for one row.

    Args:
        table: The table (``schema.table`` allowed).
        columns: Every column written, in the order of the parameters.
        key: The columns of the unique key the conflict is on.
        update: The columns a conflict overwrites (default: every column not in ``key``);
            empty means ``DO NOTHING``.
        newer: A column that only grows (a version, a position): a conflicting row is
            overwritten only by a greater value, so late or repeated events change nothing.
        marker: The driver's parameter marker.
    """
    if not columns or not key or not set(key) <= set(columns):
        raise ValueError("key must be a non-empty subset of columns")
    changed = [c for c in columns if c not in key] if update is None else list(update)
    names = ", ".join(quote(c) for c in columns)
    values = ", ".join([marker] * len(columns))
    head = f"INSERT INTO {quote(table)} AS t ({names}) VALUES ({values})"  # noqa: S608
    conflict = f"ON CONFLICT ({', '.join(quote(c) for c in key)})"
    if not changed:
        return f"{head} {conflict} DO NOTHING"
    sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in changed)
    guard = "" if newer is None else f" WHERE t.{quote(newer)} < excluded.{quote(newer)}"
    return f"{head} {conflict} DO UPDATE SET {sets}{guard}"
