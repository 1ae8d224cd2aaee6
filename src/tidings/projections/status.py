"""Where projections are: position, lag in events and seconds, and read-your-own-writes.

`ProjectionMonitor` reads the registry of a read model and the head of the log, from any
process. Lag in events is ``head - position``; lag in seconds is how long ago the oldest event
the projection has not applied was recorded (0 when it has applied everything).
``wait_for(name, position)`` returns once the version readers read has applied ``position``,
so a caller that appended at ``position`` then reads its own write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tidings.eventstore.ports import EventStore
from tidings.projections.cancel import raise_if_cancelling
from tidings.projections.errors import ProjectionError, ProjectionFailedError, ProjectionTimeout
from tidings.projections.ports import ProjectionKey, ProjectionState, ReadModel, Status

if TYPE_CHECKING:
    from tidings.projections.worker import ProjectionWorker

__all__ = ["ProjectionMonitor", "ProjectionStatus"]


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """One projection version as `tidings projections status` shows it.

    Attributes:
        key: The projection and version.
        active: True for the version readers read.
        phase: ``live`` (nothing to apply), ``catching up``, ``stopped`` (no runner holds the
            lease) or ``failed``.
        error: Why it failed (None unless failed).
        position: Its checkpoint.
        head: The log's last position when the status was taken.
        lag_events: ``head - position``.
        lag_seconds: Age of the oldest event not applied yet (0.0 when none).
        owner: The runner holding the lease, when it holds it.
        updated_at: When its registry entry last changed.
    """

    key: ProjectionKey
    active: bool
    phase: str
    error: str | None
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    owner: str | None
    updated_at: datetime


def _now_us() -> int:
    return time.time_ns() // 1000


def _phase(state: ProjectionState, lag: int, leased: bool) -> str:
    if state.status is Status.FAILED:
        return "failed"
    if not leased:
        return "stopped"
    return "live" if lag == 0 else "catching up"


class ProjectionMonitor:
    """Status, lag and `wait_for` over a read model's registry and the log, from any process.

    Args:
        store: The event store the projections read.
        read_model: Where their checkpoints are.
        poll_interval: How often `wait_for` reads a checkpoint that no local runner reports.
        workers: The workers of a runner in this process, whose commits wake waiters at once.
    """

    def __init__(
        self,
        store: EventStore,
        read_model: ReadModel,
        *,
        poll_interval: float = 0.05,
        workers: Mapping[ProjectionKey, ProjectionWorker] | None = None,
    ) -> None:
        self._store = store
        self._model = read_model
        self._poll = poll_interval
        self._workers = workers or {}

    async def statuses(self) -> list[ProjectionStatus]:
        """Return the status of every registered projection version."""
        states = await self._model.states()
        head = await self._store.head_position()
        return [await self._status(state, head) for state in states]

    async def status(self, name: str) -> ProjectionStatus:
        """Return the status of a projection's active version."""
        return await self._status(await self.active_state(name), await self._store.head_position())

    async def active_state(self, name: str) -> ProjectionState:
        """Return the registry entry of a projection's active version."""
        for state in await self._model.states():
            if state.key.name == name and state.active:
                return state
        raise ProjectionError(f"projection {name!r} has no active version", projection=name)

    async def wait_for(self, name: str, position: int, *, timeout: float | None = None) -> int:
        """Wait until the active version of ``name`` applied ``position``; return its checkpoint.

        Raises:
            ProjectionTimeout: ``timeout`` seconds passed first.
            ProjectionFailedError: the projection is stopped by its failure policy.
        """
        reached = [0]
        try:
            async with asyncio.timeout(timeout):
                return await self._wait(name, position, reached)
        except TimeoutError as exc:
            raise ProjectionTimeout(name, position, reached[0], timeout or 0.0) from exc

    async def _wait(self, name: str, position: int, reached: list[int]) -> int:
        while True:
            worker = self._local(name)
            token = worker.changed.token() if worker is not None else None
            reached[0], error = await self._reached(name, worker)
            if error is not None:
                raise ProjectionFailedError(name, error)
            if reached[0] >= position:
                return reached[0]
            raise_if_cancelling()  # a driver may have swallowed the timeout's cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await (token or asyncio.Event()).wait()

    def _local(self, name: str) -> ProjectionWorker | None:
        for key, worker in self._workers.items():
            if key.name == name and worker.active and worker.leader:
                return worker
        return None

    async def _reached(self, name: str, worker: ProjectionWorker | None) -> tuple[int, str | None]:
        if worker is not None:
            return worker.position, worker.error
        state = await self.active_state(name)
        return state.position, state.error if state.status is Status.FAILED else None

    async def _status(self, state: ProjectionState, head: int) -> ProjectionStatus:
        now = _now_us()
        lag = max(0, head - state.position)
        oldest = await self._store.read_all(after_position=state.position, limit=1) if lag else []
        seconds = (now - oldest[0].recorded_at_us) / 1e6 if oldest else 0.0
        leased = state.lease_until_us is not None and state.lease_until_us > now
        return ProjectionStatus(
            key=state.key,
            active=state.active,
            phase=_phase(state, lag, leased),
            error=state.error,
            position=state.position,
            head=head,
            lag_events=lag,
            lag_seconds=max(0.0, seconds),
            owner=state.lease_owner if leased else None,
            updated_at=datetime.fromtimestamp(state.updated_at_us / 1e6, UTC),
        )
