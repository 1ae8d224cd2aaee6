"""The seed's upcasting case: OrderPlaced v1 {orderId, userId, total} becomes v2.

v2 renames ``total`` to ``subtotal`` and adds an optional ``discountCode`` and ``itemCount``
(unknown for old orders: None). Both styles read the stored history as v2.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

import msgspec

from tidings.codecs import EventTypes
from tidings.domain import Aggregate, Decider, when

types = EventTypes()


@types.register("order.placed", version=1)
class OrderPlacedV1(msgspec.Struct, frozen=True, rename="camel"):
    """What the old code wrote."""

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
    data["subtotal"] = data.pop("total")
    return {**data, "discountCode": None, "itemCount": None}


class Order(Aggregate):
    subtotal: Decimal
    item_count: int | None

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.subtotal = Decimal(0)
        self.item_count = None

    @when(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.subtotal, self.item_count = event.subtotal, event.item_count


@dataclass(frozen=True)
class OrderState:
    subtotal: Decimal = Decimal(0)
    item_count: int | None = None


def _evolve(state: OrderState, event: object) -> OrderState:
    assert isinstance(event, OrderPlaced)
    return replace(state, subtotal=event.subtotal, item_count=event.item_count)


orders: Decider[object, OrderState, object] = Decider(
    decide=lambda command, state: [command],
    evolve=_evolve,
    initial_state=OrderState(),
    stream_prefix="order",
)
