"""A decoder for PostgreSQL's ``pgoutput`` logical replication protocol (the smallest part).

pgoutput is the plugin behind PostgreSQL's built-in logical replication. Each decoded change
is one binary record whose first byte names its kind. This module reads the three kinds a
tableless outbox needs (protocol version 1, as described in the PostgreSQL manual, "Logical
Replication Message Formats"):

- ``B`` `Begin`: a transaction starts (its commit LSN, commit time and xid);
- ``M`` `Message`: a logical decoding message written by ``pg_logical_emit_message``;
- ``C`` `Commit`: the transaction ends (its commit LSN, the LSN just past it, commit time).

The rest of the protocol (Relation, Type, Insert, Update, Delete, Truncate, Origin, and the
streaming and two-phase records of later versions) is left to the change data capture issue;
`decode` raises `UnsupportedRecordError` for those, so a caller can skip them knowingly.
Integers are big-endian; strings are null-terminated UTF-8; timestamps count microseconds
since 2000-01-01 00:00 UTC. A Message inside a streamed transaction (protocol version 2 with
``streaming``) carries a leading xid; pass ``streamed=True`` to read it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from tidings.errors import BackendError

__all__ = [
    "POSTGRES_EPOCH",
    "Begin",
    "Commit",
    "Message",
    "PgOutputError",
    "Record",
    "UnsupportedRecordError",
    "decode",
    "format_lsn",
    "from_pg_micros",
    "parse_lsn",
    "to_pg_micros",
]

POSTGRES_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""Where PostgreSQL's timestamps count from."""

_BEGIN: Final = struct.Struct(">QqI")
_COMMIT: Final = struct.Struct(">BQQq")
_MESSAGE_HEAD: Final = struct.Struct(">BQ")
_LENGTH: Final = struct.Struct(">I")
_XID: Final = struct.Struct(">I")
_TRANSACTIONAL: Final = 1


class PgOutputError(BackendError):
    """Raised when bytes from the server are not a well-formed pgoutput record."""

    def __init__(self, message: str) -> None:
        super().__init__(message, backend="postgresql")


class UnsupportedRecordError(PgOutputError):
    """Raised for a pgoutput record kind this decoder does not read (yet)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"pgoutput record {kind!r} is not decoded here")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Begin:
    """A transaction begins; its changes follow, then its `Commit`.

    Attributes:
        final_lsn: The LSN of the transaction's commit record.
        committed_at: When it committed.
        xid: Its transaction id.
    """

    final_lsn: int
    committed_at: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """A transaction commits.

    Attributes:
        commit_lsn: The LSN of the commit record.
        end_lsn: The LSN just past the commit record: where the next transaction starts.
        committed_at: When it committed.
        flags: Unused by the protocol (always 0).
    """

    commit_lsn: int
    end_lsn: int
    committed_at: datetime
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    """A logical decoding message (``pg_logical_emit_message``).

    Attributes:
        lsn: Its LSN.
        prefix: The prefix it was written with (names who it is for).
        content: Its bytes.
        transactional: Whether it was written as part of a transaction (then it is decoded
            between that transaction's `Begin` and `Commit`, only if it committed).
        xid: The transaction id, present only in streamed transactions.
    """

    lsn: int
    prefix: str
    content: bytes
    transactional: bool
    xid: int | None = None


Record = Begin | Commit | Message
"""A decoded pgoutput record."""


def decode(data: bytes, *, streamed: bool = False) -> Record:
    """Return the record encoded in ``data`` (one pgoutput record, as the server sent it).

    Raises:
        UnsupportedRecordError: a record kind other than Begin, Commit or Message.
        PgOutputError: the bytes are truncated, too long, or otherwise malformed.
    """
    raw = bytes(data)
    if not raw:
        raise PgOutputError("an empty pgoutput record")
    kind = chr(raw[0])
    try:
        if kind == "B":
            return _begin(raw)
        if kind == "C":
            return _commit(raw)
        if kind == "M":
            return _message(raw, streamed=streamed)
    except struct.error as exc:
        raise PgOutputError(f"a truncated pgoutput {kind!r} record: {exc}") from exc
    raise UnsupportedRecordError(kind)


def _begin(raw: bytes) -> Begin:
    _exact(raw, 1 + _BEGIN.size, "B")
    final_lsn, micros, xid = _BEGIN.unpack_from(raw, 1)
    return Begin(final_lsn, from_pg_micros(micros), xid)


def _commit(raw: bytes) -> Commit:
    _exact(raw, 1 + _COMMIT.size, "C")
    flags, commit_lsn, end_lsn, micros = _COMMIT.unpack_from(raw, 1)
    return Commit(commit_lsn, end_lsn, from_pg_micros(micros), flags)


def _message(raw: bytes, *, streamed: bool) -> Message:
    offset = 1
    xid: int | None = None
    if streamed:
        (xid,) = _XID.unpack_from(raw, offset)
        offset += _XID.size
    flags, lsn = _MESSAGE_HEAD.unpack_from(raw, offset)
    offset += _MESSAGE_HEAD.size
    prefix, offset = _string(raw, offset)
    (length,) = _LENGTH.unpack_from(raw, offset)
    offset += _LENGTH.size
    _exact(raw, offset + length, "M")
    content = raw[offset : offset + length]
    return Message(lsn, prefix, content, bool(flags & _TRANSACTIONAL), xid)


def _string(raw: bytes, offset: int) -> tuple[str, int]:
    end = raw.find(b"\x00", offset)
    if end < 0:
        raise PgOutputError("a pgoutput string without its terminating zero byte")
    try:
        return raw[offset:end].decode(), end + 1
    except UnicodeDecodeError as exc:
        raise PgOutputError(f"a pgoutput string that is not UTF-8: {exc}") from exc


def _exact(raw: bytes, size: int, kind: str) -> None:
    if len(raw) != size:
        raise PgOutputError(f"a pgoutput {kind!r} record of {len(raw)} bytes, expected {size}")


def from_pg_micros(micros: int) -> datetime:
    """Return the aware UTC datetime for microseconds since PostgreSQL's epoch (2000-01-01)."""
    return POSTGRES_EPOCH + timedelta(microseconds=micros)


def to_pg_micros(moment: datetime) -> int:
    """Return microseconds since PostgreSQL's epoch for an aware datetime."""
    delta = moment - POSTGRES_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_lsn(text: str) -> int:
    """Return the integer of an LSN written the PostgreSQL way (``"16/B374D848"``)."""
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not an LSN (expected 'XXXXXXXX/XXXXXXXX')")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    """Return an LSN written the PostgreSQL way (``"16/B374D848"``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
