"""The tableless outbox on PostgreSQL: logical decoding messages instead of outbox rows.

This module is the public surface; each part lives in a module of its own:

- `outbox_wal_writer`: `PostgresWalOutbox` / `add` write an event into the WAL with
  ``pg_logical_emit_message(true, ...)`` inside the business transaction (no table, no index,
  no vacuum), decoded only if that transaction commits, in commit order.
- `outbox_wal_payload`: the versioned msgpack record one message carries.
- `outbox_wal_source`: `PostgresWalOutboxSource`, an `OutboxSource` over a ``pgoutput``
  replication slot (peek to fetch, advance to mark, one active reader per slot).
- `outbox_wal_ledger`: the source's bookkeeping of whole transactions handed out and marked.
- `outbox_wal_marks`: marks committed to a table too (``mark_table=``), so they survive a
  server crash.
- `outbox_wal_slot`: slot administration: `create_slot`, `drop_slot`, `slot_status`,
  `check_wal_level`.

A slot nobody reads makes PostgreSQL keep WAL for ever: see docs/outbox_wal.md.
"""

from __future__ import annotations

from tidings.adapters.postgres.outbox_wal_payload import decode_payload_message, encode_payload
from tidings.adapters.postgres.outbox_wal_slot import (
    DEFAULT_SLOT,
    WalSlotStatus,
    check_wal_level,
    create_slot,
    drop_slot,
    slot_status,
)
from tidings.adapters.postgres.outbox_wal_source import PostgresWalOutboxSource
from tidings.adapters.postgres.outbox_wal_writer import (
    DEFAULT_CHANNEL,
    DEFAULT_PREFIX,
    PostgresWalOutbox,
    add,
)

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
    "decode_payload_message",
    "drop_slot",
    "encode_payload",
    "slot_status",
]
