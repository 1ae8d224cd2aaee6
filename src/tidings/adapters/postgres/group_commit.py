"""Group commit for PostgreSQL appends: concurrent appends of one process share a transaction.

Each append costs a commit (an fsync on the server) plus a sequencer run. When many tasks of
one process append at once, `GroupCommit` hands everything queued to one transaction and one
sequencer run instead. Requests in a group touch distinct streams (a request that shares a
stream with the group waits for the next one), so each request's outcome is its own: a
conflict fails that request alone, and the others commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

__all__ = ["GroupCommit", "Request"]

R = TypeVar("R")
_MAX_GROUP: Final = 256


@dataclass(slots=True)
class Request(Generic[R]):
    """One queued append: the streams it touches and the future its caller awaits."""

    streams: frozenset[str]
    payload: object
    future: asyncio.Future[R] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit(Generic[R]):
    """Queues requests and commits them in groups through ``commit``, one group at a time.

    ``commit(group)`` returns one outcome per request (a result or the exception to raise for
    it); if it raises, every request of the group fails with that exception.
    """

    def __init__(
        self, commit: Callable[[list[Request[R]]], Awaitable[Sequence[R | BaseException]]]
    ):
        self._commit = commit
        self._queue: list[Request[R]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, streams: frozenset[str], payload: object) -> R:
        """Queue a request and wait for its outcome."""
        request: Request[R] = Request(streams, payload)
        self._queue.append(request)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await request.future

    async def drain(self) -> None:
        """Wait until every queued request has been committed or failed."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self) -> None:
        while self._queue:
            group, self._queue = _take_group(self._queue)
            try:
                outcomes = await self._commit(group)
            except BaseException as exc:  # the group's transaction failed as a whole
                _settle_all(group, exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for request, outcome in zip(group, outcomes, strict=True):
                _settle(request, outcome)


def _take_group(queue: list[Request[R]]) -> tuple[list[Request[R]], list[Request[R]]]:
    group: list[Request[R]] = []
    rest: list[Request[R]] = []
    taken: set[str] = set()
    for request in queue:
        if len(group) < _MAX_GROUP and not (request.streams & taken):
            group.append(request)
            taken |= request.streams
        else:
            rest.append(request)
    return group, rest


def _settle(request: Request[R], outcome: R | BaseException) -> None:
    if request.future.done():  # its caller was cancelled
        return
    if isinstance(outcome, BaseException):
        request.future.set_exception(outcome)
    else:
        request.future.set_result(outcome)


def _settle_all(group: list[Request[R]], exc: BaseException) -> None:
    for request in group:
        if not request.future.done():
            request.future.set_exception(exc)
