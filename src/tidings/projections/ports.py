"""The read side's ports: where a projection's checkpoint, lease and read model live.

A *read model* is the query-shaped data a projection keeps up to date from the log (SQL tables,
Redis keys). Its backend also keeps the projection's *checkpoint* (the last log position the
read model includes) next to that data, never in the event store, so that one commit moves
both: that is what makes the effects exactly-once. Each projection version has a registry
entry (`ProjectionState`): checkpoint, status, error, lease and whether it is the *active*
version that readers read.

Ports, each small; a backend implements all of them in one class (`ReadModel`):

- `CheckpointStore`: the registry (register, read, set status, switch the active version).
- `LeaseStore`: one runner at a time per projection version.
- `FailureLog`: events skipped under the ``skip`` failure policy.
- `ReadModel`: prepare a version's tables, apply a batch with its checkpoint atomically, drop.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from tidings.eventstore.ports import RecordedEvent

if TYPE_CHECKING:
    from tidings.projections.projector import Projection

__all__ = [
    "Batch",
    "CheckpointStore",
    "Failure",
    "FailureLog",
    "LeaseStore",
    "ProjectionKey",
    "ProjectionState",
    "ReadModel",
    "Status",
]


@dataclass(frozen=True, slots=True, order=True)
class ProjectionKey:
    """One version of one projection: its registry entry, tables and lease are per key."""

    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class Status(enum.Enum):
    """What a projection version's registry entry says runners should do with it."""

    RUNNING = "running"
    """Apply events whenever a runner holds the lease (the normal state)."""
    FAILED = "failed"
    """Stopped by the ``stop`` failure policy; runners leave it alone until it is retried."""


@dataclass(frozen=True, slots=True)
class ProjectionState:
    """A projection version's registry entry.

    Attributes:
        key: The projection and version.
        position: The checkpoint: every event up to here is in the read model, none after.
        status: Running, or failed (then ``error`` says why).
        error: The failure that stopped it, naming the event (None when running).
        active: True for the version readers read (one per projection name).
        lease_owner: The runner holding (or last holding) the lease.
        lease_until_us: When that lease expires, microseconds since the epoch (None: free).
        last_recorded_us: When the event at ``position`` was recorded (0 when none).
        updated_at_us: When the entry last changed.
    """

    key: ProjectionKey
    position: int = 0
    status: Status = Status.RUNNING
    error: str | None = None
    active: bool = False
    lease_owner: str | None = None
    lease_until_us: int | None = None
    last_recorded_us: int = 0
    updated_at_us: int = 0


@dataclass(frozen=True, slots=True)
class Failure:
    """An event that a handler could not apply, recorded and skipped (``skip`` policy)."""

    position: int
    event_id: str
    event_type: str
    error: str
    recorded_at_us: int = 0


@dataclass(frozen=True, slots=True)
class Batch:
    """What one read-model transaction commits.

    Attributes:
        owner: The runner committing; it must hold the lease (fencing).
        after: The checkpoint the batch starts from; it must be the stored one.
        up_to: The checkpoint committed with the batch (at least the last record's position).
        records: The events to apply, in log order, all in ``(after, up_to]``.
        last_recorded_us: When the event at ``up_to`` was recorded.
        failure: An event recorded as skipped in the same transaction (``skip`` policy).
    """

    owner: str
    after: int
    up_to: int
    records: Sequence[RecordedEvent] = ()
    last_recorded_us: int = 0
    failure: Failure | None = None


@runtime_checkable
class CheckpointStore(Protocol):
    """The registry of projection versions: checkpoints, statuses, the active version.

    Contract (``tidings.testing.conformance.checkpoints`` checks it on every backend):

    - `register` is idempotent; the first version registered under a name becomes active.
    - A checkpoint only moves through `ReadModel.apply`, in the transaction of the effects.
    - `activate` makes one version of a name the active one, atomically for readers.
    - Every method raises `ClosedError` after ``aclose()``; driver errors are `BackendError`.
    """

    async def register(self, key: ProjectionKey) -> ProjectionState:
        """Create the entry of a version when missing (position 0); return its state."""
        ...

    async def lookup(self, key: ProjectionKey) -> ProjectionState | None:
        """Return a version's entry, or None when it was never registered."""
        ...

    async def states(self) -> list[ProjectionState]:
        """Return every entry, ordered by name and version."""
        ...

    async def set_status(
        self, key: ProjectionKey, status: Status, *, error: str | None = None
    ) -> None:
        """Mark a version running (clearing its error) or failed with an error."""
        ...

    async def activate(self, key: ProjectionKey) -> None:
        """Make this version the one readers read (the others of its name are not)."""
        ...


@runtime_checkable
class LeaseStore(Protocol):
    """At most one runner applies a projection version at a time.

    A lease is held by an owner id until it expires; only its owner can renew it; anyone can
    take it once it expired. `ReadModel.apply` checks it again inside its transaction, so a
    runner that paused past its lease (a zombie) cannot commit after another took over.
    """

    async def acquire_lease(self, key: ProjectionKey, owner: str, ttl: float) -> bool:
        """Take or renew the lease for ``ttl`` seconds; False when another owner holds it."""
        ...

    async def release_lease(self, key: ProjectionKey, owner: str) -> None:
        """Give the lease up if ``owner`` holds it, so another runner can take over at once."""
        ...


@runtime_checkable
class FailureLog(Protocol):
    """The events skipped under the ``skip`` failure policy, per projection version."""

    async def failures(self, key: ProjectionKey, *, limit: int = 100) -> list[Failure]:
        """Return the recorded failures of a version in position order."""
        ...


@runtime_checkable
class ReadModel(CheckpointStore, LeaseStore, FailureLog, Protocol):
    """Where projections write: their data and their registry entries, in one backend.

    Contract, beyond the registry's:

    - `apply` is all or nothing: the handlers' writes for every record, the failure (if any)
      and the new checkpoint commit together, or nothing does.
    - It is fenced: it commits only if ``batch.owner`` holds the lease (else `LeaseLost`) and
      the stored checkpoint is ``batch.after`` (else `CheckpointConflict`); so an event is
      never applied twice, even by a runner that lost its lease mid-batch.
    - A handler's exception rolls everything back and raises `HandlerError` naming the record;
      a backend failure raises `BackendError` (the batch may be retried).
    """

    async def prepare(self, projection: Projection[Any]) -> None:
        """Register the projection's version and run its ``setup`` (create its tables)."""
        ...

    async def apply(self, projection: Projection[Any], batch: Batch) -> None:
        """Apply a batch of events and commit its checkpoint atomically (see above)."""
        ...

    async def drop(self, key: ProjectionKey) -> None:
        """Remove a version's data and registry entry (never the active version's)."""
        ...

    async def open(self) -> Self:
        """Connect and create the registry; a second call does nothing."""
        ...

    async def aclose(self) -> None:
        """Close connections; idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
