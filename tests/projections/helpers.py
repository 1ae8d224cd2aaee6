"""Small helpers shared by the projection tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence

from tidings import Event
from tidings.eventstore.ports import AppendResult, EventStore


def unique(prefix: str = "p") -> str:
    """Return a projection name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def hits(*keys: str) -> list[Event]:
    """Return ``count.hit`` events for the keys."""
    return [Event(type="count.hit", source="/tests", data={"key": key}) for key in keys]


def poison() -> list[Event]:
    """Return one ``count.poison`` event (the counter projections' handlers raise on it)."""
    return [Event(type="count.poison", source="/tests", data={})]


async def append(store: EventStore, events: Sequence[Event], stream: str = "s") -> AppendResult:
    """Append events to a stream of the store."""
    return await store.append(stream, events)


async def eventually(check: Callable[[], object], *, timeout: float = 5.0) -> None:
    """Wait until ``check()`` (or the awaitable it returns) is truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)
