"""What every event store backend shares: input checks, retention, subscriptions, verify.

A backend subclasses `StoreBase` and implements the storage primitives (the ``_`` methods
below the line); the public methods here check their input, apply stream metadata and turn
rows into `RecordedEvent` objects, so the rules are written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Final

from tidings.errors import ConcurrencyConflict, StreamDeletedError
from tidings.events import Event
from tidings.eventstore.hashchain import verify_records
from tidings.eventstore.ports import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Checkpoint,
    ExpectedVersion,
    RecordedEvent,
    StreamAppend,
    StreamInfo,
    StreamMetadata,
    VerifyReport,
)
from tidings.eventstore.records import (
    ReadRow,
    StoredRecord,
    iter_recorded,
    recorded_from_rows,
    to_micros,
)
from tidings.lifecycle import Resource

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "StoreBase", "Wakeup", "check_expected"]

DEFAULT_MAX_EVENT_BYTES: Final = 1024 * 1024
_PAGE: Final = 1000
_EVERYTHING: Final = 2**62


def check_expected(stream_id: str, expected: ExpectedVersion, actual: int) -> None:
    """Raise `ConcurrencyConflict` unless a stream at ``actual`` meets ``expected``."""
    if expected is ANY:
        return
    if expected is NO_STREAM:
        ok = actual == 0
    elif expected is STREAM_EXISTS:
        ok = actual > 0
    else:
        ok = actual == expected
    if not ok:
        raise ConcurrencyConflict(stream_id, _shown(expected), actual or None)


def _shown(expected: ExpectedVersion) -> object:
    return expected if isinstance(expected, int) else expected.value


def check_appends(appends: Sequence[StreamAppend]) -> None:
    """Raise ValueError for an append the store must refuse before touching storage."""
    if not appends:
        raise ValueError("append_many needs at least one stream")
    seen: set[str] = set()
    for append in appends:
        if not isinstance(append.stream_id, str) or not append.stream_id:
            raise ValueError("a stream id must be a non-empty string")
        if not append.events:
            raise ValueError(f"stream {append.stream_id!r}: no events to append")
        if append.stream_id in seen:
            raise ValueError(f"stream {append.stream_id!r} appears twice in one append_many")
        seen.add(append.stream_id)
        if isinstance(append.expected_version, int) and append.expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, got {append.expected_version}")
        for event in append.events:
            if not isinstance(event, Event):
                raise TypeError(f"expected tidings.Event, got {type(event).__name__}")


class Wakeup:
    """Wakes waiting subscribers when the log grows, without losing a wake-up.

    A waiter takes `token()` before it reads; `notify()` sets that token, so a commit that lands
    between the read and the wait is never missed.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def token(self) -> asyncio.Event:
        """Return the event that the next `notify` sets."""
        return self._event

    def notify(self) -> None:
        """Wake everyone waiting on the current token."""
        self._event.set()
        self._event = asyncio.Event()


class _Retention:
    """The streams with rules that hide events (deleted, max count, max age)."""

    def __init__(self, rules: Mapping[str, tuple[int, StreamMetadata]]) -> None:
        self._rules = rules
        self._now_us = time.time_ns() // 1000

    def visible(self, row: ReadRow) -> bool:
        rule = self._rules.get(row[1])
        if rule is None:
            return True
        version, metadata = rule
        return _visible(row, version, metadata, self._now_us)


def _visible(row: ReadRow, version: int, metadata: StreamMetadata, now_us: int) -> bool:
    _, _, row_version, recorded_at_us, _, _ = row
    if metadata.deleted:
        return False
    if metadata.max_count is not None and row_version <= version - metadata.max_count:
        return False
    if metadata.max_age is not None:
        oldest = now_us - int(metadata.max_age.total_seconds() * 1_000_000)
        return recorded_at_us >= oldest
    return True


class StoreBase(Resource):
    """The shared half of every event store; backends implement the primitives."""

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    poll_interval: float = 0.5

    def __init__(self) -> None:
        self._wakeup = Wakeup()

    # -- public API ---------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        """Append events to one stream atomically (see `EventStore.append`)."""
        results = await self.append_many([StreamAppend(stream_id, list(events), expected_version)])
        return results[0]

    async def append_many(
        self, appends: Sequence[StreamAppend], *, checkpoint: Checkpoint | None = None
    ) -> list[AppendResult]:
        """Append to several streams all or nothing (see `EventStore.append_many`)."""
        check_appends(appends)
        await self._ensure_open()
        return await self._append_many(appends, checkpoint)

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        as_of: int | datetime | None = None,
    ) -> list[RecordedEvent]:
        """Return a stream's events in version order (see `EventStore.read_stream`)."""
        _check_stream_id(stream_id)
        _check_limit(limit)
        await self._ensure_open()
        state = await self._stream_state(stream_id)
        if state is None:
            return []
        version, metadata = state
        if metadata.deleted:
            raise StreamDeletedError(stream_id)
        rows = await self._select_stream(
            stream_id,
            from_version=from_version,
            backwards=backwards,
            limit=limit,
            max_version=as_of if isinstance(as_of, int) else None,
            max_recorded_us=to_micros(as_of) if isinstance(as_of, datetime) else None,
            min_version=_min_version(version, metadata),
        )
        now_us = time.time_ns() // 1000
        return recorded_from_rows([r for r in rows if _visible(r, version, metadata, now_us)])

    async def read_all(
        self,
        *,
        after_position: int = 0,
        types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Return log events after a position (see `EventStore.read_all`)."""
        _check_limit(limit)
        await self._ensure_open()
        out: list[RecordedEvent] = []
        position = after_position
        while limit is None or len(out) < limit:
            want = _PAGE if limit is None else min(_PAGE, limit - len(out))
            page, scanned = await self._read_page(position, types, want)
            out.extend(page)
            if scanned == position:
                break
            position = scanned
        return out

    async def subscribe(
        self,
        *,
        after_position: int = 0,
        types: Sequence[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield every event after a position, catching up then live (see `EventStore`)."""
        await self._ensure_open()
        position = after_position
        while True:
            token = self._wakeup.token()
            rows, scanned = await self._visible_rows(position, types, _PAGE)
            for record in iter_recorded(rows):
                yield record
            if scanned > position:
                position = scanned
                continue
            await self._wait_for_change(token)

    async def head_position(self) -> int:
        """Return the position of the last event in the log (0 when empty)."""
        await self._ensure_open()
        return await self._head()

    async def streams(self, *, after: str | None = None, limit: int = 100) -> list[StreamInfo]:
        """List streams in stream id order (see `EventStore.streams`)."""
        _check_limit(limit)
        await self._ensure_open()
        return await self._list_streams(after, limit)

    async def stream_metadata(self, stream_id: str) -> StreamMetadata:
        """Return a stream's retention and deletion settings."""
        _check_stream_id(stream_id)
        await self._ensure_open()
        state = await self._stream_state(stream_id)
        return StreamMetadata() if state is None else state[1]

    async def set_stream_metadata(self, stream_id: str, metadata: StreamMetadata) -> None:
        """Set a stream's retention settings; a deleted stream stays deleted."""
        _check_stream_id(stream_id)
        if metadata.max_count is not None and metadata.max_count < 1:
            raise ValueError("max_count must be at least 1")
        if metadata.max_age is not None and metadata.max_age.total_seconds() <= 0:
            raise ValueError("max_age must be positive")
        await self._ensure_open()
        await self._set_metadata(stream_id, metadata)
        self._wakeup.notify()

    async def delete_stream(self, stream_id: str) -> None:
        """Tombstone a stream (see `EventStore.delete_stream`)."""
        current = await self.stream_metadata(stream_id)
        await self.set_stream_metadata(
            stream_id, StreamMetadata(current.max_count, current.max_age, deleted=True)
        )

    async def verify(self) -> VerifyReport:
        """Walk every hash chain and report the first record that does not verify."""
        await self._ensure_open()
        heads, log_head = await self._heads()
        # Walk every stored row, not only up to the recorded head: rows forged past the head
        # must be reported too.
        return await verify_records(self._iter_stored(_EVERYTHING), heads, log_head)

    # -- shared machinery ---------------------------------------------------------------------

    async def _read_page(
        self, after: int, types: Sequence[str] | None, limit: int
    ) -> tuple[list[RecordedEvent], int]:
        """Return visible events after ``after`` and the last position scanned."""
        rows, scanned = await self._visible_rows(after, types, limit)
        return recorded_from_rows(rows), scanned

    async def _visible_rows(
        self, after: int, types: Sequence[str] | None, limit: int
    ) -> tuple[list[ReadRow], int]:
        """Return the visible rows after ``after`` (not decoded) and the last position scanned."""
        head, rows, rules = await self._select_log_page(after, types, limit)
        scanned = rows[-1][0] if rows else after
        if types is not None and len(rows) < limit:
            scanned = max(scanned, head)
        if rows and rules:
            retention = _Retention(rules)
            rows = [r for r in rows if retention.visible(r)]
        return rows, scanned

    async def _select_log_page(
        self, after: int, types: Sequence[str] | None, limit: int
    ) -> tuple[int, list[ReadRow], dict[str, tuple[int, StreamMetadata]]]:
        """Return what one page of the log needs: the head, the rows, the retention rules.

        The head is read only when filtering by type (else 0), and first: every position up to
        it is then visible to the select. The rules are read only when there are rows. A
        backend may override this to read all three in one round trip and one snapshot.
        """
        head = await self._head() if types is not None else 0
        rows = await self._select_log(after, types, limit)
        rules = await self._retention_rules() if rows else {}
        return head, rows, rules

    async def _wait_for_change(self, token: asyncio.Event) -> None:
        """Wait until the log may have grown: a wake-up, or the poll interval."""
        # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the
        # wake-up does (CPython gh-86296), and the subscription then never stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_interval):
                await token.wait()

    # -- primitives a backend implements ------------------------------------------------------

    @abstractmethod
    async def _append_many(
        self, appends: Sequence[StreamAppend], checkpoint: Checkpoint | None
    ) -> list[AppendResult]:
        """Store validated appends atomically; raise conflicts; call ``_wakeup.notify()``."""

    @abstractmethod
    async def _stream_state(self, stream_id: str) -> tuple[int, StreamMetadata] | None:
        """Return a stream's version and metadata, or None when unknown."""

    @abstractmethod
    async def _select_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        max_version: int | None,
        max_recorded_us: int | None,
        min_version: int,
    ) -> list[ReadRow]:
        """Return a stream's unscavenged rows within the bounds, in the order asked."""

    @abstractmethod
    async def _select_log(
        self, after: int, types: Sequence[str] | None, limit: int
    ) -> list[ReadRow]:
        """Return up to ``limit`` unscavenged rows after a position, of the given types."""

    @abstractmethod
    async def _retention_rules(self) -> dict[str, tuple[int, StreamMetadata]]:
        """Return version and metadata of every stream whose metadata hides events."""

    @abstractmethod
    async def _head(self) -> int:
        """Return the last position in the log."""

    @abstractmethod
    async def _list_streams(self, after: str | None, limit: int) -> list[StreamInfo]:
        """Return streams in id order after ``after``."""

    @abstractmethod
    async def _set_metadata(self, stream_id: str, metadata: StreamMetadata) -> None:
        """Store a stream's metadata, creating the stream row when needed."""

    @abstractmethod
    async def _heads(self) -> tuple[dict[str, tuple[int, bytes]], int]:
        """Return every stream's (version, last stream hash) and the log's head position."""

    @abstractmethod
    def _iter_stored(self, up_to: int) -> AsyncIterator[StoredRecord]:
        """Yield every row up to a position in position order, scavenged ones included."""


def _min_version(version: int, metadata: StreamMetadata) -> int:
    if metadata.max_count is None:
        return 1
    return max(1, version - metadata.max_count + 1)


def _check_stream_id(stream_id: str) -> None:
    if not isinstance(stream_id, str) or not stream_id:
        raise ValueError("a stream id must be a non-empty string")


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
