"""The in-memory event store: the same contract as the durable ones, kept in lists.

Durability aside (everything is gone when the process exits), it behaves exactly like the
SQLite and PostgreSQL stores and passes the same conformance suite. Appends are serialised by
one asyncio lock, so positions are dense and stable.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from tidings.errors import CheckpointConflict, StreamDeletedError
from tidings.eventstore.base import StoreBase, check_expected
from tidings.eventstore.ports import (
    AppendResult,
    Checkpoint,
    StreamAppend,
    StreamInfo,
    StreamMetadata,
)
from tidings.eventstore.records import (
    GENESIS,
    ReadRow,
    StoredRecord,
    chain,
    content_hash,
    encode_event,
)

__all__ = ["MemoryEventStore"]


@dataclass
class _Stream:
    records: list[StoredRecord] = field(default_factory=list)
    metadata: StreamMetadata = field(default_factory=StreamMetadata)

    @property
    def version(self) -> int:
        return self.records[-1].version if self.records else 0

    @property
    def last_hash(self) -> bytes:
        return self.records[-1].stream_hash if self.records else GENESIS


class MemoryEventStore(StoreBase):
    """An event store in this process's memory (``memory://``)."""

    def __init__(self, url: str = "memory://", *, max_event_bytes: int | None = None) -> None:
        super().__init__()
        self.url = url
        if max_event_bytes is not None:
            self.max_event_bytes = max_event_bytes
        self._log: list[StoredRecord] = []
        self._streams: dict[str, _Stream] = {}
        self._checkpoints: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def _append_many(
        self, appends: Sequence[StreamAppend], checkpoint: Checkpoint | None
    ) -> list[AppendResult]:
        async with self._lock:
            staged = [self._stage(a) for a in appends]  # checks everything before any write
            if checkpoint is not None:
                self._check_checkpoint(checkpoint)
            results = [self._commit(stream_id, rows) for stream_id, rows in staged]
            if checkpoint is not None:
                self._checkpoints[checkpoint.name] = checkpoint.position
        self._wakeup.notify()
        return results

    def _stage(self, append: StreamAppend) -> tuple[str, list[tuple[bytes, int]]]:
        stream = self._streams.get(append.stream_id)
        if stream is not None and stream.metadata.deleted:
            raise StreamDeletedError(append.stream_id)
        check_expected(append.stream_id, append.expected_version, stream.version if stream else 0)
        return append.stream_id, [
            encode_event(e, limit=self.max_event_bytes) for e in append.events
        ]

    def _check_checkpoint(self, checkpoint: Checkpoint) -> None:
        stored = self._checkpoints.get(checkpoint.name, 0)
        if checkpoint.position <= stored:
            raise CheckpointConflict(checkpoint.name, stored, checkpoint.position)

    def _commit(self, stream_id: str, rows: list[tuple[bytes, int]]) -> AppendResult:
        stream = self._streams.setdefault(stream_id, _Stream())
        now_us = time.time_ns() // 1000
        for envelope, flags in rows:
            version = stream.version + 1
            digest = content_hash(stream_id, version, now_us, flags, envelope)
            log_hash = self._log[-1].log_hash if self._log else GENESIS
            record = StoredRecord(
                position=len(self._log) + 1,
                stream_id=stream_id,
                version=version,
                recorded_at_us=now_us,
                flags=flags,
                envelope=envelope,
                content_hash=digest,
                stream_hash=chain(stream.last_hash, digest),
                log_hash=chain(log_hash, digest),
            )
            self._log.append(record)
            stream.records.append(record)
        return AppendResult(stream_id, stream.version, len(self._log))

    async def _stream_state(self, stream_id: str) -> tuple[int, StreamMetadata] | None:
        stream = self._streams.get(stream_id)
        return None if stream is None else (stream.version, stream.metadata)

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
        rows = [
            r
            for r in self._streams[stream_id].records
            if r.version >= min_version
            and (max_version is None or r.version <= max_version)
            and (max_recorded_us is None or r.recorded_at_us <= max_recorded_us)
            and (
                from_version is None
                or (r.version <= from_version if backwards else r.version >= from_version)
            )
            and r.envelope is not None
        ]
        if backwards:
            rows.reverse()
        return [_read_row(r) for r in (rows if limit is None else rows[:limit])]

    async def _select_log(
        self, after: int, types: Sequence[str] | None, limit: int
    ) -> list[ReadRow]:
        wanted = None if types is None else set(types)
        out: list[ReadRow] = []
        for record in self._log[max(after, 0) :]:
            if record.envelope is None:
                continue
            if wanted is not None and _type_of(record) not in wanted:
                continue
            out.append(_read_row(record))
            if len(out) >= limit:
                break
        return out

    async def _retention_rules(self) -> dict[str, tuple[int, StreamMetadata]]:
        return {
            stream_id: (stream.version, stream.metadata)
            for stream_id, stream in self._streams.items()
            if stream.metadata != StreamMetadata()
        }

    async def _head(self) -> int:
        return len(self._log)

    async def _list_streams(self, after: str | None, limit: int) -> list[StreamInfo]:
        names = sorted(self._streams)
        start = 0 if after is None else bisect.bisect_right(names, after)
        return [
            StreamInfo(name, self._streams[name].version, self._streams[name].metadata)
            for name in names[start : start + limit]
        ]

    async def _set_metadata(self, stream_id: str, metadata: StreamMetadata) -> None:
        stream = self._streams.setdefault(stream_id, _Stream())
        stream.metadata = replace(metadata, deleted=metadata.deleted or stream.metadata.deleted)

    async def _heads(self) -> tuple[dict[str, tuple[int, bytes]], int]:
        heads = {sid: (s.version, s.last_hash) for sid, s in self._streams.items()}
        return heads, len(self._log)

    async def _iter_stored(self, up_to: int) -> AsyncIterator[StoredRecord]:
        for record in self._log[:up_to]:
            yield record

    async def checkpoint(self, name: str) -> int:
        """Return a consumer's stored checkpoint (0 when it has none)."""
        return self._checkpoints.get(name, 0)


def _type_of(record: StoredRecord) -> str:
    return record.to_recorded().event.type


def _read_row(record: StoredRecord) -> ReadRow:
    assert record.envelope is not None
    return (
        record.position,
        record.stream_id,
        record.version,
        record.recorded_at_us,
        record.flags,
        record.envelope,
    )
