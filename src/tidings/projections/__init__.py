"""Projections: the read side of CQRS, kept up to date from the log, exactly once.

A `Projection` declares handlers per event type (``@handles``) and the tables or keys it
writes; a `ProjectionRunner` follows the log through ``subscribe`` and applies events in
batches, each committed with the projection's checkpoint in one read-model transaction
(`ReadModel.apply`), so no crash ever applies an event twice or skips one. Runners take a
lease per projection (one applies, the others stand by), report position and lag, and let a
caller wait until its own write is visible (``await runner[name].wait_for(position)``).
`rebuild` builds a new version side by side and switches readers when it has caught up.

`open_read_model(url)` returns the read model for a URL: ``sqlite:///views.db``,
``postgresql://...``, ``redis://...`` or ``memory://``. See docs/projections.md.
"""

from __future__ import annotations

from typing import Final, cast

from tidings.projections.app import ProjectionApp, load_app
from tidings.projections.errors import (
    HandlerError,
    LeaseLost,
    ProjectionError,
    ProjectionFailedError,
    ProjectionTimeout,
)
from tidings.projections.ports import (
    Batch,
    CheckpointStore,
    Failure,
    FailureLog,
    LeaseStore,
    ProjectionKey,
    ProjectionState,
    ReadModel,
    Status,
)
from tidings.projections.projector import OnError, Projection, handles
from tidings.projections.rebuild import RebuildProgress, rebuild
from tidings.projections.runner import ProjectionHandle, ProjectionRunner
from tidings.projections.status import ProjectionMonitor, ProjectionStatus
from tidings.urls import BACKENDS, configured_url, resolve

__all__ = [
    "Batch",
    "CheckpointStore",
    "Failure",
    "FailureLog",
    "HandlerError",
    "LeaseLost",
    "LeaseStore",
    "OnError",
    "Projection",
    "ProjectionApp",
    "ProjectionError",
    "ProjectionFailedError",
    "ProjectionHandle",
    "ProjectionKey",
    "ProjectionMonitor",
    "ProjectionRunner",
    "ProjectionState",
    "ProjectionStatus",
    "ProjectionTimeout",
    "ReadModel",
    "RebuildProgress",
    "Status",
    "handles",
    "load_app",
    "open_read_model",
    "rebuild",
]

READ_MODELS: Final = {
    "memory": "tidings.adapters.memory.projections:MemoryReadModel",
    "sqlite": "tidings.adapters.sqlite.projections:SQLiteReadModel",
    "postgresql": "tidings.adapters.postgres.projections:PostgresReadModel",
    "redis": "tidings.adapters.redis.projections:RedisReadModel",
}
"""The read model backends by URL scheme, until `tidings.urls.BACKENDS` lists them itself."""

BACKENDS.setdefault("readmodel", READ_MODELS)


def open_read_model(url: str | None = None) -> ReadModel:
    """Return an (unopened) read model for a URL; ``TIDINGS_READMODEL_URL`` when None.

    Use it as ``async with open_read_model(url) as read_model:``.
    """
    url = url or configured_url("readmodel")
    cls = resolve("readmodel", url)
    return cast(ReadModel, cls(url))  # type: ignore[call-arg]
