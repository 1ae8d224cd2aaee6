"""Idempotent consumers: processed keys, the inbox, effects outside the transaction, upserts.

- `DedupStore` (``tidings.adapters.{memory,sqlite,postgres,redis}.dedup``) remembers which
  keys were processed, with a time to live, and claims keys while they are being processed.
- `Inbox` (SQLite, PostgreSQL) commits the key in the transaction of the handler's effects.
- `Effects` runs an effect that cannot join the transaction (an SMS) through the states
  pending -> sending -> sent, with a provider idempotency key.
- `upsert` writes rows that a redelivery leaves as they are.
- The router's ``dedupe`` middleware (`tidings.messaging.middleware.dedupe`) uses the first
  two; docs/idempotency.md compares the mechanisms.
"""

from __future__ import annotations

from tidings.idempotency.effects import EffectOutcome, Effects, EffectState, provider_key
from tidings.idempotency.inbox import Inbox, InboxTx, process
from tidings.idempotency.ports import (
    DEFAULT_LEASE,
    DEFAULT_TTL,
    AlreadyProcessed,
    Claim,
    DedupStore,
    inbox_key,
)
from tidings.idempotency.upserts import upsert

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_TTL",
    "AlreadyProcessed",
    "Claim",
    "DedupStore",
    "EffectOutcome",
    "EffectState",
    "Effects",
    "Inbox",
    "InboxTx",
    "inbox_key",
    "process",
    "provider_key",
    "upsert",
]
