"""A time limit on the handler: past it, the handler is cancelled and fails with TimeoutError.

Inside `retry` the limit applies to each attempt; outside, to all of them together.
"""

from __future__ import annotations

import asyncio

from tidings.messaging.handlers import Context, Handler, Middleware

__all__ = ["timeout"]


def timeout(seconds: float) -> Middleware:
    """Fail the handler with `TimeoutError` when it runs longer than ``seconds``."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")

    def wrap(handler: Handler) -> Handler:
        async def run(ctx: Context) -> None:
            limit = asyncio.timeout(seconds)
            try:
                async with limit:
                    await handler(ctx)
            except TimeoutError as exc:
                if not limit.expired():
                    raise  # the handler's own TimeoutError
                raise TimeoutError(f"the handler ran longer than {seconds} s") from exc

        return run

    return wrap
