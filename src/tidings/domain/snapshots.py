"""Snapshots: a stream's state at a version, so that loading replays only the tail.

A snapshot is a cache. It is written after the events it covers have committed, it never
replaces them, and a repository that finds none (or one it cannot read) replays the whole
stream and gets the same state. Each snapshot carries the *schema version* of its state; when
the code's version differs, the snapshot is ignored (never misread) and rebuilt on the next save.

`SnapshotStore` is the port, with memory, SQLite and PostgreSQL adapters (table
``tidings_snapshots``); a `SnapshotPolicy` decides when a save also writes a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import msgspec

__all__ = [
    "EveryNEvents",
    "Snapshot",
    "SnapshotCheck",
    "SnapshotPolicy",
    "SnapshotStore",
    "SnapshotWhen",
]


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    """A stream's state at one version.

    Attributes:
        stream_id: The stream the state was built from.
        version: The version of the last event folded into the state.
        schema_version: The version of the state's shape (the model's ``snapshot_version``).
        state: The encoded state; opaque to the store.
        recorded_at_us: When it was taken, in microseconds since the Unix epoch.
    """

    stream_id: str
    version: int
    schema_version: int
    state: bytes
    recorded_at_us: int


@runtime_checkable
class SnapshotStore(Protocol):
    """Keeps snapshots per stream and version.

    Contract, the same on every backend (``tidings.testing.conformance.snapshots`` checks it):

    - `save` is atomic and idempotent: saving a snapshot for a stream and version that already
      has one replaces it (a rebuilt snapshot replaces the stale one).
    - `latest` returns the snapshot with the highest version (at most ``max_version`` when
      given), or None; it never returns a snapshot of another stream.
    - Snapshots of different versions of one stream coexist, so temporal loads can start from
      an older one; `delete` removes every snapshot of a stream.
    - Every method raises `ClosedError` after ``aclose()``, which is idempotent; driver errors
      are raised as `BackendError`.
    """

    async def save(self, snapshot: Snapshot) -> None:
        """Store a snapshot, replacing one of the same stream and version."""
        ...

    async def latest(self, stream_id: str, *, max_version: int | None = None) -> Snapshot | None:
        """Return the stream's newest snapshot at or below ``max_version`` (None: any)."""
        ...

    async def delete(self, stream_id: str) -> None:
        """Remove every snapshot of a stream (nothing happens when it has none)."""
        ...

    async def aclose(self) -> None:
        """Close connections; idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class SnapshotCheck:
    """What a `SnapshotPolicy` is told about one save.

    Attributes:
        stream_id: The stream saved to.
        before: The stream's version before the save.
        after: The stream's version after the save.
        events: The payloads just saved.
    """

    stream_id: str
    before: int
    after: int
    events: Sequence[object]


class SnapshotPolicy(Protocol):
    """Decides whether a save also writes a snapshot of the state it produced."""

    def due(self, check: SnapshotCheck) -> bool:
        """Return True to snapshot the state at ``check.after``."""
        ...


@dataclass(frozen=True, slots=True)
class EveryNEvents(SnapshotPolicy):
    """Snapshot whenever a save crosses a multiple of ``n`` (at most ``n`` events to replay)."""

    n: int = 100

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"snapshot every n events: n must be at least 1, got {self.n}")

    def due(self, check: SnapshotCheck) -> bool:
        """Return True when ``before`` and ``after`` lie in different blocks of ``n`` events."""
        return check.after // self.n > check.before // self.n


@dataclass(frozen=True, slots=True)
class SnapshotWhen(SnapshotPolicy):
    """Snapshot when a function of the save says so (e.g. after a ``closed`` event)."""

    predicate: Callable[[SnapshotCheck], bool]

    def due(self, check: SnapshotCheck) -> bool:
        """Return the predicate's answer."""
        return self.predicate(check)
