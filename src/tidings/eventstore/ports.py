"""The event store port: append-only streams, one global log, live subscriptions.

Words (see docs/concepts.md): a *stream* is one aggregate's sequence of events, numbered by
*version* from 1; the *log* is every event of every stream in one global order, numbered by
*position* from 1. Positions are dense and stable on every backend: once any reader has seen
position p, no event ever appears at or below p that it has not seen.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import msgspec

from tidings.events import Event

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "Checkpoint",
    "EventStore",
    "Expect",
    "ExpectedVersion",
    "RecordedEvent",
    "StreamAppend",
    "StreamInfo",
    "StreamMetadata",
    "VerifyReport",
]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Expect(enum.Enum):
    """Expected-version rules that are not an exact version."""

    ANY = "any"
    """Append whatever the stream's version (no concurrency check)."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (it has no events)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must have at least one event."""


ANY = Expect.ANY
NO_STREAM = Expect.NO_STREAM
STREAM_EXISTS = Expect.STREAM_EXISTS

ExpectedVersion = int | Expect
"""An exact version (the version of the stream's last event; 0 for no events) or a rule."""


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as the store keeps it: the event plus the facts the store assigned.

    Attributes:
        event: The event as appended.
        stream_id: The stream it belongs to.
        version: Its place in the stream, from 1.
        position: Its place in the global log, from 1.
        recorded_at_us: When the store committed it, in microseconds since the Unix epoch.
    """

    event: Event
    stream_id: str
    version: int
    position: int
    recorded_at_us: int

    @property
    def recorded_at(self) -> datetime:
        """When the store committed the event, as an aware UTC datetime."""
        return _EPOCH + timedelta(microseconds=self.recorded_at_us)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one append did: the stream's new version and the position of its last event."""

    stream_id: str
    version: int
    position: int


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """One stream's part of an atomic multi-stream append."""

    stream_id: str
    events: Sequence[Event]
    expected_version: ExpectedVersion = ANY


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A consumer's tracking record: it has processed the log up to ``position``.

    Committed with an atomic append, it refuses to move backwards or to repeat a position, so
    a consumer that reprocesses an event gets `CheckpointConflict` instead of a duplicate.
    """

    name: str
    position: int


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    """Retention and deletion settings of one stream.

    Attributes:
        max_count: Keep only the newest N events readable (None: all).
        max_age: Keep only events recorded within this age readable (None: all).
        deleted: The stream was tombstoned: appends are refused and its events leave the log.
    """

    max_count: int | None = None
    max_age: timedelta | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's summary, as listed by `EventStore.streams`."""

    stream_id: str
    version: int
    metadata: StreamMetadata = field(default_factory=StreamMetadata)


@runtime_checkable
class EventStore(Protocol):
    """Append-only streams of events, with one dense global log.

    Contract, the same on every backend (the conformance suite in
    ``tidings.testing.conformance.eventstore`` checks it):

    - `append` is atomic: all of its events are stored or none; they get consecutive versions in
      the stream and increasing positions in the log, in the order given.
    - Optimistic concurrency: with an exact ``expected_version`` exactly one of several racing
      appends wins each version; the others raise `ConcurrencyConflict` carrying the expected
      and actual versions, and store nothing.
    - Nothing is acknowledged before it is durable: when `append` returns, the events survive a
      crash of the process (and, with the default settings, of the machine).
    - Positions are dense and stable: a reader that has seen position p never later finds an
      unseen event at or below p. `subscribe` therefore never skips and never repeats.
    - Every method raises `ClosedError` after `aclose()`; `aclose()` is idempotent.
    - Driver errors are raised as `BackendError` with the driver's exception as the cause.
    """

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        """Append events to one stream atomically, checking its version first.

        Raises:
            ConcurrencyConflict: the stream is not at ``expected_version``.
            StreamDeletedError: the stream was tombstoned.
            EventTooLargeError: an event is larger than the store accepts.
            ValueError: an empty stream id or no events.
        """
        ...

    async def append_many(
        self, appends: Sequence[StreamAppend], *, checkpoint: Checkpoint | None = None
    ) -> list[AppendResult]:
        """Append to several streams, each with its own expected version, all or nothing.

        A ``checkpoint`` commits in the same transaction; it must be greater than the one
        stored under its name, or the whole commit fails with `CheckpointConflict`.
        """
        ...

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        as_of: int | datetime | None = None,
    ) -> list[RecordedEvent]:
        """Return a stream's events in version order (newest first when ``backwards``).

        ``from_version`` is inclusive (default: the first, or the last when backwards).
        ``as_of`` hides events after a version (int) or recorded after a time (datetime), so
        the stream reads as it was then. Events out of retention are not returned; a deleted
        stream raises `StreamDeletedError`. A stream that does not exist reads as empty.
        """
        ...

    async def read_all(
        self,
        *,
        after_position: int = 0,
        types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Return log events after a position, in position order, optionally of some types.

        Events of deleted streams and out of retention are skipped (their positions stay
        taken: the log is never renumbered).
        """
        ...

    def subscribe(
        self,
        *,
        after_position: int = 0,
        types: Sequence[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield every event after a position: first those stored, then new ones as they commit.

        Never skips, never repeats, and never ends on its own; stop iterating to stop. Resume
        after a restart by passing the position of the last event processed.
        """
        ...

    async def head_position(self) -> int:
        """Return the position of the last event in the log (0 when empty)."""
        ...

    async def streams(self, *, after: str | None = None, limit: int = 100) -> list[StreamInfo]:
        """List streams in stream id order, ``limit`` at a time, after a stream id."""
        ...

    async def stream_metadata(self, stream_id: str) -> StreamMetadata:
        """Return a stream's retention and deletion settings (defaults if never set)."""
        ...

    async def set_stream_metadata(self, stream_id: str, metadata: StreamMetadata) -> None:
        """Set a stream's retention settings; ``deleted=True`` tombstones it (irreversibly)."""
        ...

    async def delete_stream(self, stream_id: str) -> None:
        """Tombstone a stream: appends are refused, its events leave reads and the log."""
        ...

    async def verify(self) -> VerifyReport:
        """Walk every hash chain and report the first record that does not verify."""
        ...

    async def aclose(self) -> None:
        """Close connections and stop background work; idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of walking the hash chains.

    Attributes:
        ok: True when every chain verifies.
        records: How many log records were checked.
        streams: How many streams were checked.
        problem: What is wrong, naming the first bad record (None when ok).
        position: The log position of the first bad record, when it has one.
    """

    ok: bool
    records: int
    streams: int
    problem: str | None = None
    position: int | None = None
