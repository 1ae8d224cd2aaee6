"""Helpers of the tableless outbox tests: unique slots that are always dropped, and writes.

Every slot a test makes is dropped when it ends (a leftover slot keeps WAL on the shared
server for ever), and every slot is named ``tidings_test_wal_<hex>`` so a stray one is easy
to find: ``SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'tidings_test_wal%'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import psycopg

from tidings.adapters.postgres import outbox_wal
from tidings.adapters.postgres.outbox_wal import PostgresWalOutboxSource
from tidings.errors import BackendError
from tidings.events import Event

POSTGRES_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
SLOT_PREFIX: Final = "tidings_test_wal_"


def new_slot() -> str:
    """Return a slot name no other test uses."""
    return f"{SLOT_PREFIX}{uuid.uuid4().hex[:16]}"


async def drop_slot(slot: str) -> None:
    """Drop a slot and its publication, waiting while a reader still holds the slot."""
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        for _ in range(100):
            try:
                await outbox_wal.drop_slot(conn, slot)
                return
            except BackendError:  # active for a moment (a killed relay's session ending)
                await asyncio.sleep(0.1)
        await outbox_wal.drop_slot(conn, slot)


@contextlib.asynccontextmanager
async def sources(slot: str, **options: Any) -> AsyncIterator[list[PostgresWalOutboxSource]]:
    """Yield a list to append sources on ``slot`` to; all are closed and the slot dropped."""
    made: list[PostgresWalOutboxSource] = []
    try:
        yield made
    finally:
        for source in made:
            await source.aclose()
        await drop_slot(slot)


def event(number: int, aggregate: str = "order-1") -> Event:
    """Return a small event of an aggregate, its number in its data."""
    return Event(type="order.changed", source="/orders", subject=aggregate, data={"n": number})


async def write(
    events: Sequence[Event],
    *,
    topic: str = "orders",
    commit: bool = True,
    prefix: str = outbox_wal.DEFAULT_PREFIX,
    **options: Any,
) -> None:
    """Write events in one transaction, then commit it (or roll it back)."""
    writer = outbox_wal.PostgresWalOutbox(prefix=prefix)
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        for item in events:
            await writer.add(conn, item, topic=topic, **options)
        await (conn.commit() if commit else conn.rollback())


def numbers(messages: Sequence[Any]) -> list[int]:
    """Return the numbers of fetched messages' events, in order."""
    return [message.event.data["n"] for message in messages]
