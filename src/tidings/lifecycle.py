"""Explicit open/closed state for every resource tidings hands out.

A resource is opened once (``await r.open()`` or ``async with r``), used, and closed with
``aclose()``, which is idempotent. Using it before it is opened opens it lazily where that is
safe; using it after it is closed raises `ClosedError`.
"""

from __future__ import annotations

import asyncio
import enum
from types import TracebackType
from typing import Self

from tidings.errors import ClosedError

__all__ = ["Resource", "State"]


class State(enum.Enum):
    """Where a resource is in its life."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Resource:
    """Base class: open/close bookkeeping and the async context manager protocol.

    Subclasses implement `_open` and `_close`; this class makes `open` run once, even when
    called concurrently, and `aclose` run once.
    """

    _state: State = State.NEW
    _open_lock: asyncio.Lock | None = None

    @property
    def state(self) -> State:
        """Whether the resource is new, open or closed."""
        return self._state

    async def open(self) -> Self:
        """Open the resource (connect, create tables); a second call does nothing."""
        if self._state is State.OPEN:
            return self
        self._check_not_closed()
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            self._check_not_closed()  # closed while this call waited for the lock
            if self._state is State.NEW:
                await self._open()
                self._state = State.OPEN
        return self

    async def aclose(self) -> None:
        """Release every resource held; safe to call more than once.

        An `open` in progress finishes first, so what it acquires is released too.
        """
        if self._state is State.CLOSED:
            return
        if self._open_lock is None:
            await self._close_once()
            return
        async with self._open_lock:
            await self._close_once()

    async def _close_once(self) -> None:
        if self._state is State.CLOSED:
            return
        was_open = self._state is State.OPEN
        self._state = State.CLOSED
        if was_open:
            await self._close()

    async def _ensure_open(self) -> None:
        if self._state is not State.OPEN:
            await self.open()

    def _check_not_closed(self) -> None:
        if self._state is State.CLOSED:
            raise ClosedError(type(self).__name__)

    async def _open(self) -> None:
        """Acquire what the resource needs; called once."""

    async def _close(self) -> None:
        """Release what `_open` acquired; called once, only after a successful open."""

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
