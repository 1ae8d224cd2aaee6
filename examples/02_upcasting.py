"""Example 2: upcasting. Stored OrderPlaced v1 events read as v2; the history is never rewritten.

v1 was ``{orderId, userId, total}``. v2 renames ``total`` to ``subtotal`` and adds an optional
``discountCode`` and an ``itemCount`` (unknown for old orders: None). One upcaster turns v1 data
into v2 data on every read.

Run it: ``python examples/02_upcasting.py`` (creates ``orders.db`` in a temp folder).
"""

from __future__ import annotations

import asyncio
import tempfile
from decimal import Decimal
from pathlib import Path

import msgspec

from tidings import EventTypes
from tidings.eventstore import NO_STREAM, open_event_store

types = EventTypes()


@types.register("order.placed", version=1)
class OrderPlacedV1(msgspec.Struct, frozen=True, rename="camel"):
    """What last year's code wrote."""

    order_id: str
    user_id: str
    total: Decimal


@types.register("order.placed", version=2)
class OrderPlaced(msgspec.Struct, frozen=True, rename="camel"):
    """What the code reads and writes now."""

    order_id: str
    user_id: str
    subtotal: Decimal
    discount_code: str | None = None
    item_count: int | None = None


@types.upcaster("order.placed", from_version=1)
def total_becomes_subtotal(data: dict[str, object]) -> dict[str, object]:
    """v1 -> v2: rename ``total``; the new fields are unknown for old orders."""
    data["subtotal"] = data.pop("total")
    return {**data, "discountCode": None, "itemCount": None}


async def main(folder: Path) -> list[object]:
    """Store one v1 and one v2 event, read both as v2, and show the v1 row is untouched."""
    async with open_event_store(f"sqlite:///{folder / 'orders.db'}") as store:
        old = OrderPlacedV1("o-1", "u-7", Decimal("12.50"))
        new = OrderPlaced("o-2", "u-7", Decimal("30.00"), "SPRING", 3)
        await store.append(
            "order-o-1", [types.to_event(old, source="/orders")], expected_version=NO_STREAM
        )
        await store.append(
            "order-o-2", [types.to_event(new, source="/orders")], expected_version=NO_STREAM
        )
        payloads = []
        for stream_id in ("order-o-1", "order-o-2"):
            [record] = await store.read_stream(stream_id)
            payloads.append(types.from_event(record.event))
            print(f"{stream_id}: read {payloads[-1]}")
        [stored] = await store.read_stream("order-o-1")
        version = stored.event.extensions["schemaversion"]
        print(f"order-o-1 as stored: schema v{version}, data {stored.event.data}")
        print(f"hash chain ok: {(await store.verify()).ok}")
        return payloads


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
