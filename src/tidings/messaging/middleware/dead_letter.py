"""Dead letters: give up on an event by rejecting it to ``<topic>.dlq`` with the reason.

`dead_letter` sits outside `retry`: when retry has given up, it rejects the delivery, so the
event's key moves on and its order is kept. ``after`` counts deliveries, which the broker
counts exactly and durably (`Delivery.attempt`): with ``after=3``, the first two failing
deliveries are nacked (the broker brings the event back later, while the key's next events go
ahead) and the third is rejected.
"""

from __future__ import annotations

import logging
from typing import Final

from tidings.messaging.handlers import Context, Handler, Middleware

__all__ = ["dead_letter", "reason_of"]

log: Final = logging.getLogger("tidings.router")


def reason_of(exc: BaseException) -> str:
    """Return the dead-letter reason for an error: its class and its text."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def dead_letter(after: int = 1) -> Middleware:
    """Reject the event when the handler fails on its ``after``-th delivery or a later one.

    Args:
        after: The delivery (from 1) whose failure dead-letters the event; earlier failures
            propagate, and the router nacks them.
    """
    if after < 1:
        raise ValueError(f"after must be >= 1, got {after}")

    def wrap(handler: Handler) -> Handler:
        async def run(ctx: Context) -> None:
            try:
                await handler(ctx)
            except Exception as exc:
                if ctx.delivery.attempt < after or ctx.settled:
                    raise
                log.warning("%r dead-lettered: %s", ctx.delivery, reason_of(exc))
                await ctx.reject(reason_of(exc))

        return run

    return wrap
