"""The errors of the projections layer, under `TidingsError`.

```
TidingsError
└── ProjectionError            a projection, its runner or its read model refused or failed
    ├── LeaseLost                  another runner holds the projection's lease (fencing)
    ├── HandlerError               a handler raised while applying an event (rolled back)
    ├── ProjectionFailedError      the projection is stopped by its failure policy
    └── ProjectionTimeout          wait_for gave up before the projection reached a position
```

A checkpoint that would not move from the position a batch expected raises the event store's
`CheckpointConflict`: the batch was applied already (by a runner that lost its lease, or by a
replay), and nothing of it is committed again.
"""

from __future__ import annotations

from tidings.errors import TidingsError
from tidings.eventstore.ports import RecordedEvent

__all__ = [
    "HandlerError",
    "LeaseLost",
    "ProjectionError",
    "ProjectionFailedError",
    "ProjectionTimeout",
]


class ProjectionError(TidingsError):
    """Raised when a projection, its runner or its read model refuses or fails an operation."""

    def __init__(self, message: str, *, projection: str) -> None:
        super().__init__(message)
        self.projection = projection


class LeaseLost(ProjectionError):
    """Raised when a runner commits or renews without holding the projection's lease."""

    def __init__(self, projection: str, owner: str, holder: str | None) -> None:
        held = "nobody" if holder is None else repr(holder)
        super().__init__(
            f"projection {projection!r}: {owner!r} does not hold the lease (held by {held})",
            projection=projection,
        )
        self.owner = owner
        self.holder = holder


class HandlerError(ProjectionError):
    """Raised when a handler fails on an event; the batch's transaction was rolled back.

    Attributes:
        index: The failing event's index in the batch's records.
        record: The failing event.
        committed: None when nothing of the batch was committed (every SQL backend); else the
            checkpoint the backend committed before the failing event (Redis, which cannot roll
            back the commands a script already ran).
    """

    def __init__(self, projection: str, index: int, record: RecordedEvent, cause: BaseException):
        super().__init__(
            f"projection {projection!r} failed on position {record.position} "
            f"({record.event.type}, id {record.event.id}): {type(cause).__name__}: {cause}",
            projection=projection,
        )
        self.index = index
        self.record = record
        self.committed: int | None = None


class ProjectionFailedError(ProjectionError):
    """Raised when waiting on a projection that its failure policy stopped."""

    def __init__(self, projection: str, error: str | None) -> None:
        super().__init__(
            f"projection {projection!r} is stopped by its failure policy: {error}",
            projection=projection,
        )
        self.error = error


class ProjectionTimeout(ProjectionError, TimeoutError):
    """Raised when `wait_for` times out before the projection reaches the position."""

    def __init__(self, projection: str, wanted: int, reached: int, timeout: float) -> None:
        super().__init__(
            f"projection {projection!r} reached {reached}, not {wanted}, within {timeout}s",
            projection=projection,
        )
        self.wanted = wanted
        self.reached = reached
