"""Retry in process, with exponential backoff and jitter, while the event's key waits.

The handler runs again in the same process instead of being nacked: a nack would let the key's
later events overtake this one, since the broker redelivers out of order. Between attempts the
handler sleeps through `Context.sleep`, which gives its concurrency slot back, so other keys
keep flowing; the dispatcher keeps extending the delivery's ack deadline meanwhile.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tidings.messaging.handlers import Context, Handler, Middleware

__all__ = ["backoff", "retry"]


def backoff(
    attempt: int,
    *,
    base: float,
    max_delay: float,
    jitter: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Return the pause after failed attempt ``attempt`` (from 1), in seconds.

    The pause doubles from ``base`` up to ``max_delay``; jitter (0 to 1) then takes away up to
    that share of it at random, so keys that failed together do not retry together.
    """
    delay = min(base * 2.0 ** (attempt - 1), max_delay)
    return delay * (1 - jitter * rand())


def retry(
    max_attempts: int = 5,
    *,
    base: float = 0.1,
    max_delay: float = 10.0,
    jitter: float = 0.5,
) -> Middleware:
    """Run the handler up to ``max_attempts`` times; after the last failure, raise its error.

    Args:
        max_attempts: Attempts in all, the first included (1: no retry).
        base: The pause after the first failure, in seconds; it doubles after each one.
        max_delay: The longest pause.
        jitter: The share of each pause (0 to 1) taken away at random.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be between 0 and 1, got {jitter}")

    def wrap(handler: Handler) -> Handler:
        async def run(ctx: Context) -> None:
            for attempt in range(1, max_attempts + 1):
                ctx.attempt = attempt
                try:
                    await handler(ctx)
                    return
                except Exception:
                    if attempt == max_attempts or ctx.settled:
                        raise
                await ctx.sleep(backoff(attempt, base=base, max_delay=max_delay, jitter=jitter))

        return run

    return wrap
