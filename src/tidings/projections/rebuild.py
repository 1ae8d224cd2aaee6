"""Side-by-side rebuilds: a new version fills its own tables while the old one keeps serving.

Bump a projection's ``version`` and `rebuild` it: it registers the new version (its tables
are ``{table}_v{new}``), runs it from position 0 while readers still read the active version,
and switches readers (`ReadModel.activate`) once it has caught up with the log. Progress is the
new version's checkpoint, so a rebuild that crashed resumes where it committed, and a rebuild
started while another process already runs the new version only watches it. Deployed runners
with the new code do the same thing on their own (``auto_activate``); `rebuild` is the way to
do it ahead of a deploy, with a progress report (``tidings projections rebuild NAME``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tidings.eventstore.ports import EventStore
from tidings.projections.errors import ProjectionError, ProjectionFailedError
from tidings.projections.ports import ProjectionKey, ProjectionState, ReadModel, Status
from tidings.projections.projector import Projection
from tidings.projections.runner import ProjectionRunner

__all__ = ["RebuildProgress", "rebuild"]


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    """How far a rebuild is.

    Attributes:
        key: The version being built.
        position: Its checkpoint.
        head: The log's last position.
        rate: Events applied per second, recently (0.0 until measured).
        eta: Seconds left at that rate (None until measured).
        active: True once readers read this version (the rebuild is done).
    """

    key: ProjectionKey
    position: int
    head: int
    rate: float
    eta: float | None
    active: bool

    @property
    def done(self) -> bool:
        """True once the version is active and has caught up with the log."""
        return self.active and self.position >= self.head


class _Meter:
    """A smoothed rate of a growing count (exponential moving average)."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def update(self, count: int) -> float:
        now = time.monotonic()
        if self._last is not None and now > self._last[0]:
            recent = (count - self._last[1]) / (now - self._last[0])
            self.rate = recent if self.rate == 0.0 else 0.7 * self.rate + 0.3 * recent
        self._last = (now, count)
        return self.rate


async def rebuild(
    store: EventStore,
    read_model: ReadModel,
    projection: Projection[Any],
    *,
    on_progress: Callable[[RebuildProgress], object] | None = None,
    interval: float = 0.5,
    drop_old: bool = False,
    **runner_options: Any,
) -> RebuildProgress:
    """Build ``projection`` at its version side by side, then switch readers to it.

    Args:
        store: The event store.
        read_model: Where the projection writes.
        projection: The projection, at the version to build.
        on_progress: Called every ``interval`` seconds with a `RebuildProgress`.
        interval: Seconds between progress reports.
        drop_old: Drop the older versions' tables and entries once switched.
        runner_options: Passed to `ProjectionRunner` (``owner``, ``batch_size``, ...).

    Raises:
        ProjectionFailedError: the new version failed on an event (fix it, then retry).
    """
    meter = _Meter()
    options = {**runner_options, "auto_activate": True}  # the switch is the point
    async with ProjectionRunner(store, read_model, [projection], **options):
        while True:
            progress = await _progress(store, read_model, projection.key, meter)
            if on_progress is not None:
                on_progress(progress)
            if progress.done:
                break
            await asyncio.sleep(interval)
    if drop_old:
        await _drop_older(read_model, projection.key)
    return progress


async def _progress(
    store: EventStore, read_model: ReadModel, key: ProjectionKey, meter: _Meter
) -> RebuildProgress:
    state = await _known(read_model, key)
    head = await store.head_position()
    rate = meter.update(state.position)
    eta = (head - state.position) / rate if rate > 0 else None
    return RebuildProgress(key, state.position, head, rate, eta, state.active)


async def _known(read_model: ReadModel, key: ProjectionKey) -> ProjectionState:
    state = await read_model.lookup(key)
    if state is None:
        raise ProjectionError(f"{key} is not registered", projection=key.name)
    if state.status is Status.FAILED:
        raise ProjectionFailedError(key.name, state.error)
    return state


async def _drop_older(read_model: ReadModel, key: ProjectionKey) -> None:
    for state in await read_model.states():
        if state.key.name == key.name and state.key.version < key.version and not state.active:
            await read_model.drop(state.key)
