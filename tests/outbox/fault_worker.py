"""Processes of the outbox fault tests: a business process writing orders, and a relay.

``python -m tests.outbox.fault_worker business MODE DB BROKER_URL SEED`` writes orders (a row
in ``orders`` and, per MODE, its event) until killed or ``--limit`` orders: a fifth of them
roll back, and the process SIGKILLs itself once, right after the commit of a chosen order
(the 100th to 300th)
(the crash between the two writes that dual writes cannot survive). MODE is ``outbox`` (the
event in the same transaction), ``commit-then-publish`` or ``publish-then-commit`` (naive
dual writes). ``python -m tests.outbox.fault_worker relay DB BROKER_URL`` runs a relay.
DB is ``sqlite:///path`` or ``postgresql://...#schema``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
import uuid
from typing import Any

from tidings.adapters.nats.broker import NatsBroker
from tidings.events import Event
from tidings.outbox import Relay
from tidings.testing.faults import READY, say

ORDERS_DDL = "CREATE TABLE IF NOT EXISTS {orders} (id text PRIMARY KEY)"


def split_db(db: str) -> tuple[str, str]:
    """Return (URL, PostgreSQL schema or '')."""
    url, _, schema = db.partition("#")
    return url, schema


def order_event(order_id: str) -> Event:
    return Event(type="order.placed", source="/shop", subject=order_id, data={"id": order_id})


def broker(url: str) -> NatsBroker:
    return NatsBroker(url, fsync_ack_warning=False, publish_timeout=1.0)


class SQLiteShop:
    def __init__(self, url: str) -> None:
        from tidings.adapters.sqlite.outbox import SQLiteOutbox

        self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.outbox = SQLiteOutbox()
        self.outbox.create_table(self.conn)
        self.conn.execute(ORDERS_DDL.format(orders="orders"))

    async def begin(self, order_id: str) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("INSERT INTO orders (id) VALUES (?)", (order_id,))

    async def add(self, event: Event) -> None:
        self.outbox.add(self.conn, event, topic="orders")

    async def end(self, commit: bool) -> None:
        self.conn.execute("COMMIT" if commit else "ROLLBACK")


class PostgresShop:
    async def open(self, url: str, schema: str) -> PostgresShop:
        import psycopg

        from tidings.adapters.postgres.outbox import PostgresOutbox

        self.outbox = PostgresOutbox(schema=schema)
        self.orders = f'"{schema}".orders'
        self.conn = await psycopg.AsyncConnection.connect(url)
        await self.conn.execute(ORDERS_DDL.format(orders=self.orders))
        await self.conn.commit()
        return self

    async def begin(self, order_id: str) -> None:
        await self.conn.execute(f"INSERT INTO {self.orders} (id) VALUES (%s)", (order_id,))

    async def add(self, event: Event) -> None:
        await self.outbox.add(self.conn, event, topic="orders")

    async def end(self, commit: bool) -> None:
        await (self.conn.commit() if commit else self.conn.rollback())


async def business(mode: str, db: str, broker_url: str, seed: int, limit: int) -> None:
    url, schema = split_db(db)
    shop: Any = (
        SQLiteShop(url) if url.startswith("sqlite") else await PostgresShop().open(url, schema)
    )
    chance = random.Random(seed)
    crash_at = chance.randrange(100, 300)
    # The outbox writer never talks to the broker; the naive ones must.
    async with contextlib.AsyncExitStack() as stack:
        publisher = (
            None if mode == "outbox" else await stack.enter_async_context(broker(broker_url))
        )
        say(READY)
        for n in range(limit):
            order_id = uuid.uuid4().hex
            event, commit = order_event(order_id), chance.random() >= 0.2
            await shop.begin(order_id)
            if mode == "outbox":
                await shop.add(event)
            elif mode == "publish-then-commit":
                await publisher.publish("orders", [event])  # type: ignore[union-attr]
            await shop.end(commit)
            if n == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)  # dies between the two writes
            if mode == "commit-then-publish" and commit:
                await publisher.publish("orders", [event])  # type: ignore[union-attr]
    say("done")


PUBLISHING = "publishing"
"""What a relay says as it starts a publish, so the test can kill it inside the publish."""


class SlowNetwork:
    """A broker whose publishes take 20 ms longer (a slow link) and are announced on stdout."""

    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker

    async def publish(self, topic: str, events: Any, *, key: str | None = None) -> Any:
        say(PUBLISHING)
        await asyncio.sleep(0.02)
        return await self._broker.publish(topic, events, key=key)


async def relay(db: str, broker_url: str) -> None:
    from tidings.outbox.sources import open_source

    url, schema = split_db(db)
    source: Any = open_source(url, **({"schema": schema} if schema else {}))
    async with source, broker(broker_url) as target:
        say(READY)
        slow: Any = SlowNetwork(target)
        await Relay(source, slow, batch_size=20, max_backoff=0.5).run()


def main(argv: list[str]) -> None:
    if argv[0] == "business":
        mode, db, broker_url, seed = argv[1:5]
        asyncio.run(business(mode, db, broker_url, int(seed), int(argv[5])))
    else:
        asyncio.run(relay(argv[1], argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
