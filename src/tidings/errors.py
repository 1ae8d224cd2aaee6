"""Every error tidings raises, in one tree.

```
TidingsError
├── ConfigurationError        bad URL, unknown scheme, missing optional extra
├── ClosedError               a resource was used after aclose()
├── EventError                an event envelope is invalid
│   ├── InvalidAttributeError     one attribute is missing, misnamed or of the wrong kind
│   └── MalformedEventError       bytes or JSON that cannot be read as a CloudEvent
├── CodecError                a payload cannot be encoded or decoded
│   └── UnknownEventTypeError     no Python class is registered for an event type
├── EventStoreError           the event store refused or failed an operation
│   ├── ConcurrencyConflict       expected_version did not match the stream's version
│   ├── CheckpointConflict        a checkpoint would not move forward (already processed)
│   ├── StreamDeletedError        the stream was tombstoned
│   ├── EventTooLargeError        an event is larger than the store accepts
│   └── IntegrityError            the hash chain does not verify
├── DomainError               the domain layer (aggregate, repository, shredder) refused
│   └── UnhandledEventError       an aggregate has no handler for a payload type
└── BackendError              a driver or service failed (the driver's error is the __cause__)
    └── BackendUnavailableError   the service cannot be reached
```

Every class carries structured context as attributes, so callers never parse messages.
Adapters translate driver exceptions at the boundary (``raise BackendError(...) from exc``);
no driver exception escapes a public method.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "CheckpointConflict",
    "ClosedError",
    "CodecError",
    "ConcurrencyConflict",
    "ConfigurationError",
    "DomainError",
    "EventError",
    "EventStoreError",
    "EventTooLargeError",
    "IntegrityError",
    "InvalidAttributeError",
    "MalformedEventError",
    "StreamDeletedError",
    "TidingsError",
    "UnhandledEventError",
    "UnknownEventTypeError",
]


class TidingsError(Exception):
    """The root of every error tidings raises."""


class ConfigurationError(TidingsError):
    """Raised when a URL, option or installed extra does not allow what was asked."""

    def __init__(self, message: str, *, extra: str | None = None) -> None:
        super().__init__(message)
        self.extra = extra


class ClosedError(TidingsError):
    """Raised when a resource is used after it was closed."""

    def __init__(self, resource: str) -> None:
        super().__init__(f"{resource} is closed")
        self.resource = resource


class EventError(TidingsError):
    """Raised when an event envelope is invalid."""


class InvalidAttributeError(EventError, ValueError):
    """Raised when one CloudEvents attribute is missing, misnamed or has the wrong kind."""

    def __init__(self, attribute: str, reason: str) -> None:
        super().__init__(f"attribute {attribute!r}: {reason}")
        self.attribute = attribute
        self.reason = reason


class MalformedEventError(EventError, ValueError):
    """Raised when bytes, JSON or headers cannot be read as a CloudEvent at all."""


class CodecError(TidingsError):
    """Raised when a payload cannot be encoded to or decoded from an event's data."""


class UnknownEventTypeError(CodecError, LookupError):
    """Raised when no Python class is registered for an event type (and version)."""

    def __init__(self, event_type: str, version: int | None = None) -> None:
        where = event_type if version is None else f"{event_type} v{version}"
        super().__init__(f"no payload class is registered for event type {where}")
        self.event_type = event_type
        self.version = version


class EventStoreError(TidingsError):
    """Raised when the event store refuses or fails an operation."""


class ConcurrencyConflict(EventStoreError):
    """Raised when an append's expected_version does not match the stream's version."""

    def __init__(self, stream_id: str, expected: object, actual: int | None) -> None:
        shown = "no stream" if actual is None else str(actual)
        super().__init__(
            f"stream {stream_id!r}: expected version {expected}, but the stream is at {shown}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class StreamDeletedError(EventStoreError):
    """Raised when a tombstoned stream is appended to or read."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"stream {stream_id!r} was deleted (tombstoned)")
        self.stream_id = stream_id


class EventTooLargeError(EventStoreError, ValueError):
    """Raised when an event's encoded size exceeds the store's limit."""

    def __init__(self, event_id: str, size: int, limit: int) -> None:
        super().__init__(f"event {event_id} is {size} bytes; the limit is {limit}")
        self.event_id = event_id
        self.size = size
        self.limit = limit


class IntegrityError(EventStoreError):
    """Raised when the hash chain does not verify: a record was altered, inserted or removed."""

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class BackendError(TidingsError):
    """Raised when a driver or service fails; the driver's exception is ``__cause__``."""

    def __init__(self, message: str, *, backend: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend


class BackendUnavailableError(BackendError):
    """Raised when a backend service cannot be reached."""


class CheckpointConflict(EventStoreError):
    """Raised when a checkpoint would not move forward: the position was processed already."""

    def __init__(self, name: str, stored: int, given: int) -> None:
        super().__init__(f"checkpoint {name!r} is at {stored}; refusing to record {given}")
        self.name = name
        self.stored = stored
        self.given = given


class DomainError(TidingsError):
    """Raised when the domain layer (aggregate, repository, shredder) refuses an operation."""


class UnhandledEventError(DomainError, LookupError):
    """Raised when an aggregate is given a payload type that no ``@when`` handler accepts."""

    def __init__(self, aggregate: type[object], payload_type: type[object]) -> None:
        super().__init__(
            f"{aggregate.__qualname__} has no @when({payload_type.__qualname__}) handler"
        )
        self.aggregate = aggregate
        self.payload_type = payload_type
