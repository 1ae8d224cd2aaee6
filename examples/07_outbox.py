"""Example 7: the transactional outbox: an order and its event commit together, or neither.

Run it: ``python examples/07_outbox.py`` (creates ``shop.db`` and ``broker.db`` in a temp
folder). The order service writes the order row and its ``order.placed`` event in one SQLite
transaction; a relay publishes what committed to a SQLite broker; a subscriber prints it. In
production the relay is its own process:
``tidings outbox relay sqlite:///shop.db sqlite:///broker.db``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

from tidings import Event
from tidings.adapters.sqlite.broker import SQLiteBroker
from tidings.adapters.sqlite.outbox import SQLiteOutbox, SQLiteOutboxSource
from tidings.outbox import Relay

outbox = SQLiteOutbox()
ORDERS = [("o-1", "tea", 450), ("o-2", "piano", 990_000), ("o-3", "mug", 900)]


class PaymentDeclined(Exception):
    """The card was refused: the order must not exist, and nobody may hear of it."""


def place_order(conn: sqlite3.Connection, order_id: str, sku: str, cents: int) -> None:
    """Insert the order and its event in one transaction (rolled back when payment fails)."""
    with conn:  # commits on success, rolls back on an exception
        conn.execute("BEGIN")
        conn.execute("INSERT INTO orders VALUES (?, ?, ?)", (order_id, sku, cents))
        event = Event(type="order.placed", source="/shop", data={"sku": sku, "cents": cents})
        outbox.add(conn, event, topic="orders", aggregate_id=order_id)
        if cents > 10_000:
            raise PaymentDeclined(order_id)


async def main(folder: Path) -> list[str]:
    """Place three orders (one declined), relay the outbox, print what subscribers receive."""
    conn = sqlite3.connect(folder / "shop.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    outbox.create_table(conn)
    conn.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, sku TEXT, cents INTEGER)")
    for order_id, sku, cents in ORDERS:
        try:
            place_order(conn, order_id, sku, cents)
            print(f"placed {order_id}")
        except PaymentDeclined:
            print(f"declined {order_id}: no order row, no event")
    conn.close()

    async with (
        SQLiteOutboxSource(folder / "shop.db") as source,
        SQLiteBroker(folder / "broker.db") as broker,
    ):
        relayed = await Relay(source, broker).drain()
        print(f"relay published {relayed} events; backlog {(await source.status()).backlog}")
        received = []
        async with broker.subscribe("orders", group="shipping") as orders:
            for _ in range(relayed):
                delivery = await asyncio.wait_for(anext(orders), 5.0)
                print(f"shipping heard {delivery.event.type} {delivery.event.partitionkey}")
                received.append(str(delivery.event.partitionkey))
                await delivery.ack()
        return received


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
