"""Correlation and causation ids on everything a handler publishes.

Each event the handler published inherits the incoming event's correlation id (or takes the
incoming event's id when it has none: it started the transaction) and names the incoming
event as its cause. Ids the handler set itself are kept.
"""

from __future__ import annotations

from tidings.events import Event
from tidings.messaging.handlers import Context, Handler, Middleware, Outgoing

__all__ = ["correlation", "stamp"]


def stamp(event: Event, cause: Event) -> Event:
    """Return ``event`` with its correlation and causation ids taken from ``cause`` if unset."""
    if event.correlationid is not None and event.causationid is not None:
        return event
    return event.replace(
        correlationid=event.correlationid or cause.correlationid or cause.id,
        causationid=event.causationid or cause.id,
    )


def correlation() -> Middleware:
    """Stamp correlation and causation ids on the events the handler published."""

    def wrap(handler: Handler) -> Handler:
        async def run(ctx: Context) -> None:
            await handler(ctx)
            cause = ctx.event
            ctx.outbox[:] = [Outgoing(o.topic, stamp(o.event, cause), o.key) for o in ctx.outbox]

        return run

    return wrap
