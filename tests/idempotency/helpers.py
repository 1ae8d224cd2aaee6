"""What the idempotency tests share: contexts without a router, waiting, SQLite effect tables."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from tidings.events import Event
from tidings.messaging.handlers import Context
from tidings.testing.conformance.dedup import FakeDelivery


def context(event: Event, *, group: str = "g", attempt: int = 1) -> tuple[Context, FakeDelivery]:
    """Return a handler context for one delivery of ``event``, as the router would make it."""
    delivery = FakeDelivery(event, attempt=attempt)
    ctx = Context(delivery, event, group=group, source="/test", types=None, sleep=asyncio.sleep)
    return ctx, delivery


def new_event(**data: object) -> Event:
    """Return a fresh event of type ``order.shipped``."""
    return Event(type="order.shipped", source="/shop", data=dict(data))


def sqlite_table(path: Path, ddl: str) -> None:
    """Create a table in a SQLite file (making the file)."""
    with sqlite3.connect(path) as conn:
        conn.execute(ddl)
    conn.close()


def sqlite_rows(path: Path, query: str) -> list[tuple[object, ...]]:
    """Return the rows of a query on a SQLite file."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(query).fetchall()
    conn.close()
    return rows


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true, polling."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the checked state has no event to wait on
            await asyncio.sleep(0.01)
