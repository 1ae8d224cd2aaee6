"""The projection runner: applies the log to read models, exactly once, one runner at a time.

::

    async with ProjectionRunner(store, read_model, [OrderTotals()]) as runner:
        result = await store.append("order-1", [placed])
        await runner["order_totals"].wait_for(result.position, timeout=2)
        ...  # the read model now includes the append

A runner runs every projection given in its own task (`ProjectionWorker`). Each takes its
lease, reads the log through ``subscribe`` from its checkpoint, and commits batches of events
(up to ``batch_size``, whatever is already read) together with the checkpoint in one
read-model transaction. Several runner processes may run the same projections: one holds each
lease and applies, the others stand by and take over within about ``lease_ttl`` after it dies
(at once when it stops cleanly and releases its leases).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from tidings.errors import ConfigurationError
from tidings.eventstore.ports import EventStore
from tidings.lifecycle import Resource
from tidings.projections.ports import Batch, ReadModel
from tidings.projections.projector import Projection
from tidings.projections.status import ProjectionMonitor, ProjectionStatus
from tidings.projections.worker import ProjectionWorker, WorkerSettings

__all__ = ["ProjectionHandle", "ProjectionRunner", "default_owner"]

logger = logging.getLogger("tidings.projections")


def default_owner() -> str:
    """Return a runner id unique to this process: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class ProjectionHandle:
    """One projection of a running `ProjectionRunner` (``runner[name]``)."""

    def __init__(self, runner: ProjectionRunner, name: str) -> None:
        self._runner = runner
        self.name = name

    @property
    def position(self) -> int:
        """The checkpoint this runner last committed or read for the projection."""
        return self._runner.worker(self.name).position

    async def wait_for(self, position: int, *, timeout: float | None = None) -> int:
        """Wait until readers of the projection see ``position``; return its checkpoint."""
        return await self._runner.wait_for(position, name=self.name, timeout=timeout)

    async def status(self) -> ProjectionStatus:
        """Return the status (position, lag) of the projection's active version."""
        return await self._runner.monitor.status(self.name)


class ProjectionRunner(Resource):
    """Runs projections over one event store into one read model.

    Args:
        store: The event store whose log is projected.
        read_model: Where the projections write, with their checkpoints and leases.
        projections: The projections (each name once).
        owner: This runner's id in the leases (default: ``host:pid:random``). A runner that
            restarts with the same owner id takes its leases back at once.
        lease_ttl: Seconds a lease lasts without renewal (renewed every ``lease_ttl / 3``):
            how long a standby waits before taking over from a runner that died.
        batch_size: The most events committed in one transaction.
        auto_activate: Switch readers to a projection's new version once it caught up.
        retry_delay: Seconds to wait after a backend error before trying again.
        on_commit: Called with every committed `Batch` (for metrics and tests).
    """

    def __init__(
        self,
        store: EventStore,
        read_model: ReadModel,
        projections: Sequence[Projection[Any]],
        *,
        owner: str | None = None,
        lease_ttl: float = 10.0,
        batch_size: int = 500,
        auto_activate: bool = True,
        retry_delay: float = 1.0,
        on_commit: Callable[[Batch], object] | None = None,
    ) -> None:
        _check_unique(projections)
        if batch_size < 1 or lease_ttl <= 0:
            raise ConfigurationError("batch_size must be >= 1 and lease_ttl positive")
        self.owner = owner or default_owner()
        settings = WorkerSettings(
            self.owner, lease_ttl, batch_size, auto_activate, retry_delay, on_commit
        )
        self.store = store
        self.read_model = read_model
        self._workers = {
            p.key: ProjectionWorker(p, store, read_model, settings) for p in projections
        }
        self.monitor = ProjectionMonitor(store, read_model, workers=self._workers)
        self._tasks: list[asyncio.Task[None]] = []

    def __getitem__(self, name: str) -> ProjectionHandle:
        self.worker(name)
        return ProjectionHandle(self, name)

    def worker(self, name: str) -> ProjectionWorker:
        """Return the worker running the projection ``name``."""
        for key, worker in self._workers.items():
            if key.name == name:
                return worker
        raise KeyError(f"this runner does not run a projection named {name!r}")

    @property
    def workers(self) -> list[ProjectionWorker]:
        """The workers, one per projection."""
        return list(self._workers.values())

    async def _open(self) -> None:
        for worker in self._workers.values():
            await self.read_model.prepare(worker.projection)
        self._tasks = [
            asyncio.create_task(w.run(), name=f"tidings-projection-{w.key}")
            for w in self._workers.values()
        ]

    async def _close(self) -> None:
        pending = set(self._tasks)
        while pending:  # cancel again what is still running: a driver may swallow a cancel
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                logger.error("%s ended with an error", task.get_name(), exc_info=task.exception())

    async def wait_for(
        self, position: int, *, name: str | None = None, timeout: float | None = None
    ) -> int:
        """Wait until every projection (or the one named) has applied ``position``.

        It waits on the version readers read, wherever it runs; this runner's own commits wake
        it at once, others' are polled. Returns the lowest checkpoint reached.

        Raises:
            ProjectionTimeout: ``timeout`` seconds passed first.
            ProjectionFailedError: a projection waited on was stopped by its failure policy.
        """
        await self._ensure_open()
        names = [name] if name is not None else sorted({k.name for k in self._workers})
        waits = [self.monitor.wait_for(n, position, timeout=timeout) for n in names]
        return min(await asyncio.gather(*waits))

    async def statuses(self) -> list[ProjectionStatus]:
        """Return the status of every version registered in the read model."""
        await self._ensure_open()
        return await self.monitor.statuses()


def _check_unique(projections: Sequence[Projection[Any]]) -> None:
    seen: set[str] = set()
    for projection in projections:
        if projection.name in seen:
            raise ConfigurationError(f"projection {projection.name!r} is given twice")
        seen.add(projection.name)
