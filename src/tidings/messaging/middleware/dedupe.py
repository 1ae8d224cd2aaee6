"""Dedupe: a delivery whose key was processed is skipped (and acked), not handled again.

``dedupe(inbox)`` takes an `Inbox` (SQLite, PostgreSQL) or any `DedupStore` (memory, Redis, or
the SQL stores without their transaction):

- **Inbox**: the handler runs inside the inbox's transaction and writes its effects through
  ``inbox.current()``; the key commits with them, and the router acks after the commit. The
  events the handler published are stored with the key, so a redelivery after a crash
  between the commit and the publish publishes them again (same ids: the broker keeps one).
  Exactly one effect, whatever crashes where.
- **Store**: the key is claimed before the handler (a concurrent duplicate, after a
  rebalance, waits), recorded after it, and released when it fails. The window that remains:
  a crash after the handler's effect and before the record runs the handler again after the
  lease. Make such effects idempotent themselves (an upsert, a provider idempotency key,
  `tidings.idempotency.Effects`).

Put it inside ``retry`` (each attempt is a transaction of its own) and outside ``timeout``::

    [correlation(), dead_letter(), retry(5), dedupe(inbox), timeout(60.0)]
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any, Final

import msgspec

from tidings.events import Event
from tidings.idempotency.inbox import Inbox, bound
from tidings.idempotency.ports import (
    DEFAULT_LEASE,
    DEFAULT_TTL,
    AlreadyProcessed,
    Claim,
    DedupStore,
    inbox_key,
)
from tidings.messaging.handlers import Context, Handler, Middleware, Outgoing

__all__ = ["decode_outbox", "dedupe", "encode_outbox"]

log: Final = logging.getLogger("tidings.router")

KeyOf = Callable[[Context], str]
"""Derives a delivery's key from its context (``lambda ctx: ctx.payload.order_id``)."""


class _Stored(msgspec.Struct, array_like=True):
    topic: str
    key: str | None
    event: msgspec.Raw


class _Rollback(Exception):
    """Ends an inbox transaction without committing (the handler settled the delivery)."""


def encode_outbox(outbox: list[Outgoing]) -> bytes | None:
    """Return the bytes stored with an inbox key for what a handler published (None: nothing)."""
    if not outbox:
        return None
    return msgspec.json.encode(
        [_Stored(o.topic, o.key, msgspec.Raw(o.event.to_json())) for o in outbox]
    )


def decode_outbox(raw: bytes | None) -> list[Outgoing]:
    """Return the published events `encode_outbox` stored."""
    if not raw:
        return []
    stored = msgspec.json.decode(raw, type=list[_Stored])
    return [Outgoing(s.topic, Event.from_json(bytes(s.event)), s.key) for s in stored]


def dedupe(
    target: DedupStore | Inbox[Any],
    *,
    key: KeyOf | None = None,
    consumer: str | None = None,
    ttl: float | None = DEFAULT_TTL,
    lease: float = DEFAULT_LEASE,
    poll: float = 0.5,
) -> Middleware:
    """Skip deliveries whose key is done; with an inbox, run the handler in its transaction.

    Args:
        target: An `Inbox` (effects and key in one transaction) or a `DedupStore`.
        key: Derives the key from the context (default: the event id).
        consumer: Prefixes the key (default: the app's group).
        ttl: How long a key is remembered, in seconds (None: forever); longer than the
            broker may redeliver or replay.
        lease: How long a store claim holds a key while the handler runs (store only).
        poll: How often a key claimed by another worker is tried again (store only).
    """

    def names(ctx: Context) -> tuple[str, str]:
        return consumer or ctx.group, key(ctx) if key is not None else ctx.event.id

    if isinstance(target, Inbox):
        return _inbox_middleware(target, names, ttl)
    return _store_middleware(target, names, ttl, lease, poll)


def _inbox_middleware(
    inbox: Inbox[Any], names: Callable[[Context], tuple[str, str]], ttl: float | None
) -> Middleware:
    def wrap(handler: Handler) -> Handler:
        async def run(ctx: Context) -> None:
            name, derived = names(ctx)
            try:
                async with inbox.transaction(
                    ctx.delivery, consumer=name, key=derived, ttl=ttl, ack=False
                ) as tx:
                    with bound(tx):
                        await handler(ctx)
                    if ctx.settled:
                        raise _Rollback
                    tx.outcome = encode_outbox(ctx.outbox)
            except AlreadyProcessed as done:
                log.info("%r skipped: %s was processed already", ctx.delivery, done.key)
                ctx.outbox[:] = decode_outbox(done.outcome)
            except _Rollback:
                return

        return run

    return wrap


def _store_middleware(
    store: DedupStore,
    names: Callable[[Context], tuple[str, str]],
    ttl: float | None,
    lease: float,
    poll: float,
) -> Middleware:
    def wrap(handler: Handler) -> Handler:
        async def run(ctx: Context) -> None:
            stored, owner = inbox_key(*names(ctx)), uuid.uuid4().hex
            while (found := await store.claim(stored, owner, lease=lease)) is Claim.BUSY:
                await ctx.sleep(poll)
            if found is Claim.DONE:
                log.info("%r skipped: %s was processed already", ctx.delivery, stored)
                ctx.outbox.clear()
                return
            try:
                await handler(ctx)
            except BaseException:
                await asyncio.shield(store.release(stored, owner))
                raise
            if ctx.settled:
                await store.release(stored, owner)
                return
            await store.record(stored, ttl=ttl)

        return run

    return wrap
