"""Helpers shared by the router and middleware tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true, polling every 5 ms; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out waiting")
