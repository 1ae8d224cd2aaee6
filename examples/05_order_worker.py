"""Example 5: an order worker on SQLite: typed handlers, retries, dead letters and a requeue.

Run it: ``python examples/05_order_worker.py`` (creates ``shop.db`` in a temp folder). The same
app runs as a process with ``tidings worker module:build_app`` until SIGTERM.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tidings import App, EventTypes
from tidings.messaging import Broker, open_broker
from tidings.messaging.dlq import dead_letters
from tidings.messaging.handlers import Context
from tidings.messaging.middleware import correlation, dead_letter, retry, timeout

types = EventTypes()


@types.register("order.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    sku: str
    quantity: int


@types.register("order.shipped")
@dataclass(frozen=True)
class OrderShipped:
    order_id: str
    sku: str


stock = {"tea": 10, "mug": 3, "cake": 0}
flaky = {"mug": 2}  # the warehouse API times out twice for mugs


def build_app(broker: Broker | str | None = None) -> App:
    """The fulfilment app: ship each order from stock, or dead-letter it with the reason."""
    app = App(
        broker,
        group="fulfilment",
        types=types,
        middleware=[correlation(), dead_letter(), retry(3, base=0.01), timeout(5.0)],
    )

    @app.handler("orders")
    async def ship(order: OrderPlaced, ctx: Context) -> None:
        if flaky.get(order.sku, 0) >= ctx.attempt:
            raise ConnectionError(f"warehouse API timed out (attempt {ctx.attempt})")
        if stock[order.sku] < order.quantity:
            raise ValueError(f"out of stock: {order.quantity} x {order.sku}")
        stock[order.sku] -= order.quantity
        await ctx.publish("shipments", OrderShipped(order.order_id, order.sku), key=order.order_id)

    return app


async def settled(app: App, count: int) -> None:
    """Wait until the app has acked or rejected ``count`` deliveries in all."""
    for _ in range(1000):
        if app.stats.acked + app.stats.rejected >= count:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{count} deliveries were not settled")


async def main(folder: Path) -> list[str]:
    """Place four orders, ship three, dead-letter one, restock, requeue it, ship it."""
    async with open_broker(f"sqlite:///{folder / 'shop.db'}") as broker:
        orders = [("o-1", "tea", 2), ("o-2", "mug", 1), ("o-3", "cake", 1), ("o-4", "tea", 1)]
        for order_id, sku, quantity in orders:
            event = types.to_event(OrderPlaced(order_id, sku, quantity), source="/shop")
            await broker.publish("orders", [event], key=order_id)
        app = build_app(broker)
        async with app.running():
            await settled(app, 4)
        print(f"first run: {app.stats.acked} shipped, {app.stats.rejected} dead-lettered")

        workbench = dead_letters(broker)
        for entry in await workbench.list("orders"):
            print(f"dead letter {entry.event.data}: {entry.reason}")
        stock["cake"] = 5
        requeued = await workbench.requeue("orders", None, actor="example")
        print(f"restocked cake, requeued {len(requeued)}")
        async with app.running():
            await settled(app, 5)

        shipped = []
        async with broker.subscribe("shipments", group="example") as shipments:
            for _ in range(4):
                delivery = await asyncio.wait_for(anext(shipments), 5.0)
                shipped.append(delivery.event)
                await delivery.ack()
        for event in shipped:
            print(f"shipped {event.data}, caused by {event.causationid}")
        return sorted(str(event.subject or event.partitionkey) for event in shipped)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
