"""Settling one delivery: decode its payload, run the handler chain, ack, nack or reject.

What the router does with each delivery the dispatcher runs:

- success: what the handler published goes out, then the delivery is acked;
- a middleware settled it (``dead_letter`` rejected it): nothing more;
- failure: the delivery is nacked with a delay doubling from 0.5 s per delivery, up to 60 s;
- no handler for the event's type, or a payload that does not decode: rejected to the
  dead-letter topic with the reason (or, for an unhandled type, acked when so configured);
- the app stopped mid-handler (`Interrupted`, or cancelled): left unsettled, so the broker
  gives it back to the group.

A settlement the broker refuses is logged: the delivery comes back after its ack deadline.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Final

from tidings.codecs import EventTypes
from tidings.errors import CodecError, TidingsError
from tidings.messaging.dispatch import Slot
from tidings.messaging.handlers import Context, Handler, Interrupted, Route
from tidings.messaging.middleware.dead_letter import reason_of
from tidings.messaging.ports import Broker, Delivery

__all__ = ["AppStats", "Settler"]

log: Final = logging.getLogger("tidings.router")

_NACK_BASE: Final = 0.5
_NACK_MAX: Final = 60.0

RouteKey = tuple[str, str | None]
"""A route's topic and event type (None: every type)."""


@dataclass(slots=True)
class AppStats:
    """What an app did with its deliveries, counted since it was made."""

    received: int = 0
    acked: int = 0
    rejected: int = 0
    nacked: int = 0
    published: int = 0
    interrupted: int = 0
    cancelled: int = 0


class Settler:
    """Runs and settles the deliveries of one app run."""

    def __init__(
        self,
        broker: Broker,
        routes: Mapping[RouteKey, Route],
        chains: Mapping[RouteKey, Handler],
        *,
        group: str,
        source: str,
        types: EventTypes | None,
        unhandled_ack: bool,
        stats: AppStats,
    ) -> None:
        self._broker = broker
        self._routes = routes
        self._chains = chains
        self._group = group
        self._source = source
        self._types = types
        self._unhandled_ack = unhandled_ack
        self.stats = stats

    async def __call__(self, delivery: Delivery, slot: Slot) -> None:
        """Decode, run and settle one delivery (never raises but for cancellation)."""
        self.stats.received += 1
        found = self._route_of(delivery)
        if found is None:
            await self._unhandled(delivery)
            return
        key, route = found
        try:
            payload = self._decode(delivery, route)
        except CodecError as exc:
            await self._reject(delivery, f"cannot decode {delivery.event.type}: {exc}")
            return
        ctx = Context(
            delivery,
            payload,
            group=self._group,
            source=self._source,
            types=self._types,
            sleep=slot.pause,
        )
        await self._run(ctx, self._chains[key])

    def _route_of(self, delivery: Delivery) -> tuple[RouteKey, Route] | None:
        for key in ((delivery.topic, delivery.event.type), (delivery.topic, None)):
            route = self._routes.get(key)
            if route is not None:
                return key, route
        return None

    def _decode(self, delivery: Delivery, route: Route) -> object:
        if route.payload is None:
            return delivery.event
        assert self._types is not None  # make_route refuses payload classes without types
        return self._types.decode_as(delivery.event, route.payload)

    async def _run(self, ctx: Context, chain: Handler) -> None:
        try:
            await chain(ctx)
        except Interrupted:
            self.stats.interrupted += 1
            return
        except Exception as exc:
            await self._failed(ctx, exc)
            return
        if ctx.settled:
            self.stats.rejected += 1
            return
        await self._succeeded(ctx)

    async def _succeeded(self, ctx: Context) -> None:
        try:
            for (topic, key), group in itertools.groupby(ctx.outbox, lambda o: (o.topic, o.key)):
                await self._broker.publish(topic, [o.event for o in group], key=key)
        except TidingsError as exc:
            await self._failed(ctx, exc)
            return
        self.stats.published += len(ctx.outbox)
        if await _settle(ctx.delivery.ack()):
            self.stats.acked += 1

    async def _failed(self, ctx: Context, exc: Exception) -> None:
        delivery = ctx.delivery
        delay = min(_NACK_BASE * 2.0 ** (delivery.attempt - 1), _NACK_MAX)
        log.warning("%r failed (%s); redelivering in %.1f s", delivery, reason_of(exc), delay)
        if await _settle(delivery.nack(delay=delay)):
            self.stats.nacked += 1

    async def _unhandled(self, delivery: Delivery) -> None:
        if self._unhandled_ack:
            if await _settle(delivery.ack()):
                self.stats.acked += 1
            return
        await self._reject(delivery, f"no handler for {delivery.event.type} in {self._group}")

    async def _reject(self, delivery: Delivery, reason: str) -> None:
        log.warning("%r rejected: %s", delivery, reason)
        if await _settle(delivery.reject(reason)):
            self.stats.rejected += 1


async def _settle(settling: Awaitable[None]) -> bool:
    """Await a settlement; if the broker refuses, the delivery comes back by itself."""
    try:
        await settling
    except TidingsError as exc:
        log.warning("settling failed (the delivery will come back): %s", exc)
        return False
    return True
