"""Read models in this process's memory: the same contract as the durable ones, in dicts.

Each projection version has a dict of its own; handlers read and write it through a `MemoryTx`,
whose writes are kept aside and merged only when the whole batch succeeded, with the
checkpoint. Applies are serialised by one lock, so the fencing checks and the merge happen
as one step. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from tidings.errors import CheckpointConflict
from tidings.eventstore.ports import RecordedEvent
from tidings.lifecycle import Resource
from tidings.projections.errors import HandlerError, LeaseLost, ProjectionError
from tidings.projections.ports import (
    Batch,
    Failure,
    ProjectionKey,
    ProjectionState,
    ReadModel,
    Status,
)
from tidings.projections.projector import Projection

__all__ = ["MemoryReadModel", "MemoryTx"]

_DELETED: Final = object()


def _now_us() -> int:
    return time.time_ns() // 1000


class MemoryTx:
    """A handler's view of its projection version's dict, inside one batch.

    Attributes:
        key: The projection version written to.
        record: The event being applied.
    """

    def __init__(self, data: Mapping[object, object], key: ProjectionKey) -> None:
        self.key = key
        self.record: RecordedEvent | None = None
        self._data = data
        self._writes: dict[object, object] = {}

    def get(self, item: object, default: object = None) -> object:
        """Return the value of ``item`` as this batch sees it."""
        value = self._writes.get(item, self._data.get(item, default))
        return default if value is _DELETED else value

    def set(self, item: object, value: object) -> None:
        """Set ``item`` to ``value`` when the batch commits."""
        self._writes[item] = value

    def delete(self, item: object) -> None:
        """Remove ``item`` when the batch commits."""
        self._writes[item] = _DELETED

    def incr(self, item: object, by: int = 1) -> int:
        """Add ``by`` to the integer at ``item`` (0 when missing); return the new value."""
        value = self.get(item, 0)
        if not isinstance(value, int):
            raise TypeError(f"{item!r} holds {type(value).__name__}, not an int")
        self.set(item, value + by)
        return value + by

    def merge_into(self, data: dict[object, object]) -> None:
        """Apply the batch's writes to ``data`` (called by the read model on commit)."""
        for item, value in self._writes.items():
            if value is _DELETED:
                data.pop(item, None)
            else:
                data[item] = value


class MemoryReadModel(Resource, ReadModel):
    """Read models and their registry in memory (for tests and single-process tools)."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._states: dict[ProjectionKey, ProjectionState] = {}
        self._data: dict[ProjectionKey, dict[object, object]] = {}
        self._failures: dict[ProjectionKey, list[Failure]] = {}
        self._lock = asyncio.Lock()

    def data(self, name: str, version: int | None = None) -> Mapping[object, object]:
        """Return the committed data of a projection (its active version when None)."""
        self._check_not_closed()
        if version is None:
            active = (k for k, s in self._states.items() if k.name == name and s.active)
            version = next(active, ProjectionKey(name, 0)).version
        return dict(self._data.get(ProjectionKey(name, version), {}))

    # -- registry -----------------------------------------------------------------------------

    async def register(self, key: ProjectionKey) -> ProjectionState:
        """Create the entry of a version when missing; the first of a name becomes active."""
        await self._ensure_open()
        if key not in self._states:
            first = not any(k.name == key.name for k in self._states)
            self._states[key] = ProjectionState(key, active=first, updated_at_us=_now_us())
            self._data[key] = {}
        return self._states[key]

    async def lookup(self, key: ProjectionKey) -> ProjectionState | None:
        """Return a version's entry, or None."""
        await self._ensure_open()
        return self._states.get(key)

    async def states(self) -> list[ProjectionState]:
        """Return every entry, by name and version."""
        await self._ensure_open()
        return [self._states[key] for key in sorted(self._states)]

    async def set_status(
        self, key: ProjectionKey, status: Status, *, error: str | None = None
    ) -> None:
        """Mark a version running (clearing its error) or failed with an error."""
        state = await self._known(key)
        shown = error if status is Status.FAILED else None
        self._states[key] = replace(state, status=status, error=shown, updated_at_us=_now_us())

    async def activate(self, key: ProjectionKey) -> None:
        """Make this version the active one of its name."""
        await self._known(key)
        for other, state in self._states.items():
            if other.name == key.name:
                self._states[other] = replace(state, active=other == key)

    async def failures(self, key: ProjectionKey, *, limit: int = 100) -> list[Failure]:
        """Return the recorded failures of a version in position order."""
        await self._ensure_open()
        return self._failures.get(key, [])[:limit]

    # -- leases -------------------------------------------------------------------------------

    async def acquire_lease(self, key: ProjectionKey, owner: str, ttl: float) -> bool:
        """Take or renew the lease for ``ttl`` seconds; False when another owner holds it."""
        state = await self._known(key)
        now = _now_us()
        held = state.lease_until_us is not None and state.lease_until_us > now
        if held and state.lease_owner != owner:
            return False
        until = now + int(ttl * 1_000_000)
        self._states[key] = replace(state, lease_owner=owner, lease_until_us=until)
        return True

    async def release_lease(self, key: ProjectionKey, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        state = await self._known(key)
        if state.lease_owner == owner:
            self._states[key] = replace(state, lease_owner=None, lease_until_us=None)

    # -- read model ---------------------------------------------------------------------------

    async def prepare(self, projection: Projection[Any]) -> None:
        """Register the version and run its ``setup``."""
        await self.register(projection.key)
        tx = MemoryTx(self._data[projection.key], projection.key)
        await _maybe_await(projection.setup(tx))
        tx.merge_into(self._data[projection.key])

    async def apply(self, projection: Projection[Any], batch: Batch) -> None:
        """Apply a batch and move the checkpoint, all or nothing, fenced by lease and position."""
        key = projection.key
        async with self._lock:
            state = await self._known(key)
            _fence(key, state, batch)
            tx = MemoryTx(self._data[key], key)
            await _run_handlers(projection, batch, tx)
            self._commit(key, state, batch, tx)

    def _commit(
        self, key: ProjectionKey, state: ProjectionState, batch: Batch, tx: MemoryTx
    ) -> None:
        tx.merge_into(self._data[key])
        if batch.failure is not None:
            failure = replace(batch.failure, recorded_at_us=_now_us())
            self._failures.setdefault(key, []).append(failure)
        self._states[key] = replace(
            state,
            position=batch.up_to,
            last_recorded_us=batch.last_recorded_us,
            updated_at_us=_now_us(),
        )

    async def drop(self, key: ProjectionKey) -> None:
        """Remove a version's data and entry (never the active version's)."""
        state = await self._known(key)
        if state.active:
            raise ProjectionError(f"{key} is active", projection=key.name)
        for table in (self._states, self._data, self._failures):
            table.pop(key, None)

    async def _known(self, key: ProjectionKey) -> ProjectionState:
        await self._ensure_open()
        state = self._states.get(key)
        if state is None:
            raise ProjectionError(f"{key} is not registered", projection=key.name)
        return state


def _fence(key: ProjectionKey, state: ProjectionState, batch: Batch) -> None:
    """Refuse a batch from a runner without the lease, or from a stale checkpoint."""
    if state.lease_owner != batch.owner:
        raise LeaseLost(key.name, batch.owner, state.lease_owner)
    if state.position != batch.after:
        raise CheckpointConflict(f"{key}", state.position, batch.up_to)


async def _run_handlers(projection: Projection[Any], batch: Batch, tx: MemoryTx) -> None:
    dispatch = projection.dispatch()
    for index, record in enumerate(batch.records):
        tx.record = record
        try:
            await _maybe_await(dispatch[record.event.type](record, tx))
        except Exception as exc:
            raise HandlerError(projection.name, index, record, exc) from exc


async def _maybe_await(value: object) -> object:
    return await value if inspect.isawaitable(value) else value
