"""Coalescing: lookups that tasks make at about the same time, answered by one query.

A consumer running 32 handlers asks for 32 keys within a millisecond; one query for all of
them costs about what one query for one costs. `Coalesced` gathers the keys asked for while
a query is running and sends them together in the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

__all__ = ["Coalesced"]

V = TypeVar("V")


class Coalesced(Generic[V]):
    """Answers `get(key)` calls with one ``fetch(keys)`` per batch of concurrent calls.

    Args:
        fetch: Returns the values of the keys it finds (absent keys are left out).
    """

    def __init__(self, fetch: Callable[[list[str]], Awaitable[Mapping[str, V]]]) -> None:
        self._fetch = fetch
        self._waiting: dict[str, list[asyncio.Future[V | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: str) -> V | None:
        """Return the key's value, or None when ``fetch`` did not find it."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            try:
                found = await self._fetch(list(batch))
            except Exception as exc:
                _fail(batch, exc)
                continue
            for key, futures in batch.items():
                for future in futures:
                    if not future.done():
                        future.set_result(found.get(key))


def _fail(batch: dict[str, list[asyncio.Future[V | None]]], exc: Exception) -> None:
    for futures in batch.values():
        for future in futures:
            if not future.done():
                future.set_exception(exc)
