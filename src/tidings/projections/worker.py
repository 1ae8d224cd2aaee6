"""One projection version inside a runner: its lease, its batches, its failure policy.

A `ProjectionWorker` loops forever: it takes the lease (or waits as a standby), follows the log
from the stored checkpoint, and commits each batch with its checkpoint through
`ReadModel.apply`. It renews the lease every ``ttl / 3``; once the lease is lost (or a commit
is fenced off) it stops applying and becomes a standby again. Backend errors are logged and
retried after a pause; handler errors follow the projection's failure policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from tidings.errors import BackendError, CheckpointConflict
from tidings.eventstore.base import Wakeup
from tidings.eventstore.ports import EventStore, RecordedEvent
from tidings.projections.cancel import raise_if_cancelling
from tidings.projections.errors import HandlerError, LeaseLost
from tidings.projections.feed import Feed
from tidings.projections.ports import Batch, Failure, ProjectionState, ReadModel, Status
from tidings.projections.projector import Projection

__all__ = ["ProjectionWorker", "WorkerSettings"]

logger = logging.getLogger("tidings.projections")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a runner's workers behave (see `ProjectionRunner` for each option)."""

    owner: str
    lease_ttl: float = 10.0
    batch_size: int = 500
    auto_activate: bool = True
    retry_delay: float = 1.0
    on_commit: Callable[[Batch], object] | None = None


class _Stopped(Exception):
    """The failure policy stopped the projection."""


class ProjectionWorker:
    """Applies one projection version whenever its runner holds the lease.

    Attributes:
        position: The checkpoint this worker last committed or read.
        leader: True while this worker holds the lease and applies events.
        active: True when this version is the one readers read.
        error: The failure that stopped the projection, if any.
    """

    def __init__(
        self,
        projection: Projection[Any],
        store: EventStore,
        read_model: ReadModel,
        settings: WorkerSettings,
    ) -> None:
        self.projection = projection
        self.key = projection.key
        self.position = 0
        self.leader = False
        self.active = False
        self.error: str | None = None
        self.changed = Wakeup()
        self._store = store
        self._model = read_model
        self._settings = settings
        self._types = frozenset(projection.dispatch())
        self._superseded = False

    async def run(self) -> None:
        """Lead or stand by, forever (until cancelled)."""
        while True:
            try:
                await self._round()
            except (LeaseLost, CheckpointConflict) as exc:
                logger.info("%s: stopped leading: %s", self.key, exc)
            except BackendError as exc:
                logger.warning("%s: %s; retrying in %ss", self.key, exc, self._settings.retry_delay)
                await asyncio.sleep(self._settings.retry_delay)
            except Exception:  # a bug, not the event's fault: say so each time, then retry
                logger.exception("%s: unexpected error; retrying", self.key)
                await asyncio.sleep(self._settings.retry_delay)
            self.changed.notify()
            raise_if_cancelling()  # a driver may have swallowed our cancellation
            await asyncio.sleep(self._standby_interval)

    @property
    def _standby_interval(self) -> float:
        return min(self._settings.lease_ttl / 3, 1.0)

    async def _round(self) -> None:
        state = await self._leadable()
        owner, ttl = self._settings.owner, self._settings.lease_ttl
        if state is None or not await self._model.acquire_lease(self.key, owner, ttl):
            return
        state = await self._model.lookup(self.key) or state  # after the lease: nothing moves it
        self.position, self.active, self.leader = state.position, state.active, True
        try:
            await _race(self._follow(), self._keep_lease())
        except _Stopped:
            pass
        finally:
            self.leader = False
            await self._release()

    async def _leadable(self) -> ProjectionState | None:
        """Return the registry entry if runners should apply this version, else None."""
        state = await self._model.lookup(self.key)
        if state is None:  # dropped after a newer version took over: never resurrect it
            self.error = f"{self.key} is not registered (dropped?)"
            return None
        self.error = state.error if state.status is Status.FAILED else None
        return state if self.error is None else None  # failed: wait until it is retried

    async def _release(self) -> None:
        try:
            await self._model.release_lease(self.key, self._settings.owner)
        except BackendError as exc:
            logger.warning("%s: could not release the lease: %s", self.key, exc)

    async def _keep_lease(self) -> None:
        ttl, last = self._settings.lease_ttl, time.monotonic()
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                if not await self._model.acquire_lease(self.key, self._settings.owner, ttl):
                    raise LeaseLost(self.key.name, self._settings.owner, None)
                last = time.monotonic()
                state = await self._model.lookup(self.key)  # another process may switch versions
                self.active = state is not None and state.active
            except BackendError as exc:
                if time.monotonic() - last > ttl * 2 / 3:
                    raise LeaseLost(self.key.name, self._settings.owner, None) from exc

    async def _follow(self) -> None:
        size = self._settings.batch_size
        async with Feed(self._store, self.position, limit=4 * size) as feed:
            while True:
                await self._commit(await feed.take(size))
                if feed.empty and not self.active and not self._superseded:
                    await self._maybe_activate()

    async def _commit(self, records: Sequence[RecordedEvent]) -> None:
        handled = [r for r in records if r.event.type in self._types]
        last = records[-1]
        batch = Batch(
            self._settings.owner, self.position, last.position, handled, last.recorded_at_us
        )
        try:
            await self._apply(batch)
        except HandlerError as exc:
            await self._on_failure(records, batch, exc)

    async def _apply(self, batch: Batch) -> None:
        await self._model.apply(self.projection, batch)
        self.position = batch.up_to
        self.changed.notify()
        if self._settings.on_commit is not None:
            self._settings.on_commit(batch)

    async def _on_failure(
        self, records: Sequence[RecordedEvent], batch: Batch, exc: HandlerError
    ) -> None:
        cut = next(i for i, r in enumerate(records) if r.position == exc.record.position)
        await self._commit_before(records[:cut], batch, exc)
        logger.error("%s", exc, exc_info=exc.__cause__)
        if self.projection.on_error == "stop":
            await self._model.set_status(self.key, Status.FAILED, error=str(exc))
            self.error = str(exc)
            raise _Stopped from exc
        failing = exc.record
        failure = Failure(failing.position, failing.event.id, failing.event.type, str(exc))
        at = failing.recorded_at_us
        await self._apply(Batch(batch.owner, self.position, failing.position, (), at, failure))
        if cut + 1 < len(records):
            await self._commit(records[cut + 1 :])

    async def _commit_before(
        self, before: Sequence[RecordedEvent], batch: Batch, exc: HandlerError
    ) -> None:
        """Commit the events of a failed batch that come before the failing one."""
        if exc.committed is not None:  # the backend committed them already (Redis)
            self.position = exc.committed
        elif before:
            last, applied = before[-1], batch.records[: exc.index]
            await self._apply(
                Batch(batch.owner, batch.after, last.position, applied, last.recorded_at_us)
            )

    async def _maybe_activate(self) -> None:
        if not self._settings.auto_activate or self.position < await self._store.head_position():
            return
        states = await self._model.states()
        current = next((s.key for s in states if s.key.name == self.key.name and s.active), None)
        if current is not None and current.version > self.key.version:
            self._superseded = True  # a newer version serves readers: keep this one quiet
            return
        if current != self.key:
            await self._model.activate(self.key)
            logger.info("%s: caught up at %s and activated", self.key, self.position)
        self.active = True


async def _race(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run coroutines until the first ends; cancel the others; raise what the first raised."""
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()
