"""Cancellation that redis-py loses, raised again.

redis-py's asyncio client (8.1 on Python 3.11, and earlier releases: redis/redis-py#2028,
#2551) can swallow the `asyncio.CancelledError` of a task cancelled while a command waits for
its reply: the command returns (or fails with a connection error) and the task runs on. A
subscription's task that ignores ``cancel()`` never stops, so every Redis call of the broker
goes through `call`, which raises `CancelledError` when the task was cancelled during the call.
A measured 60 to 85 % of cancellations landing mid-command were lost without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["call"]

T = TypeVar("T")


async def call(command: Awaitable[T]) -> T:
    """Await a redis-py command; raise `CancelledError` if the task was cancelled meanwhile."""
    task = asyncio.current_task()
    before = 0 if task is None else task.cancelling()
    try:
        result = await command
    except BaseException as exc:
        if task is not None and task.cancelling() > before:
            raise asyncio.CancelledError from exc
        raise
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result
