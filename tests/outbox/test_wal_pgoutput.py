"""The pgoutput decoder: records encoded here per the protocol spec decode to what was encoded.

The encoders below follow the PostgreSQL manual, "Logical Replication Message Formats"
(protocol version 1; a streamed Message carries a leading xid), independently of the decoder.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.cdc.pgoutput import (
    POSTGRES_EPOCH,
    Begin,
    Commit,
    Message,
    PgOutputError,
    UnsupportedRecordError,
    decode,
    format_lsn,
    parse_lsn,
)

lsns = st.integers(min_value=0, max_value=2**64 - 1)
xids = st.integers(min_value=0, max_value=2**32 - 1)
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
prefixes = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


def pg_micros(moment: datetime) -> int:
    return (moment - POSTGRES_EPOCH) // timedelta(microseconds=1)


def encode_begin(record: Begin) -> bytes:
    micros = pg_micros(record.committed_at)
    return b"B" + struct.pack(">QqI", record.final_lsn, micros, record.xid)


def encode_commit(record: Commit) -> bytes:
    micros = pg_micros(record.committed_at)
    return (
        b"C"
        + bytes([record.flags])
        + struct.pack(">QQq", record.commit_lsn, record.end_lsn, micros)
    )


def encode_message(record: Message) -> bytes:
    head = b"M"
    if record.xid is not None:
        head += record.xid.to_bytes(4, "big")
    flags = bytes([1 if record.transactional else 0])
    prefix = record.prefix.encode() + b"\x00"
    length = len(record.content).to_bytes(4, "big")
    return head + flags + record.lsn.to_bytes(8, "big") + prefix + length + record.content


begins = st.builds(Begin, final_lsn=lsns, committed_at=moments, xid=xids)
commits = st.builds(Commit, commit_lsn=lsns, end_lsn=lsns, committed_at=moments)
messages = st.builds(
    Message,
    lsn=lsns,
    prefix=prefixes,
    content=st.binary(max_size=256),
    transactional=st.booleans(),
    xid=st.none() | xids,
)


@given(begins)
def test_begin_decodes_to_what_was_encoded(record: Begin) -> None:
    assert decode(encode_begin(record)) == record


@given(commits)
def test_commit_decodes_to_what_was_encoded(record: Commit) -> None:
    assert decode(encode_commit(record)) == record


@given(messages)
def test_message_decodes_to_what_was_encoded(record: Message) -> None:
    assert decode(encode_message(record), streamed=record.xid is not None) == record


@given(st.one_of(begins.map(encode_begin), commits.map(encode_commit)), st.data())
def test_truncated_or_padded_record_is_refused(raw: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=1, max_value=len(raw) - 1))
    with pytest.raises(PgOutputError):
        decode(raw[:cut])
    with pytest.raises(PgOutputError):
        decode(raw + b"\x00")


@given(messages.filter(lambda m: m.xid is None), st.data())
def test_truncated_message_is_refused(record: Message, data: st.DataObject) -> None:
    raw = encode_message(record)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(PgOutputError):
        decode(raw[:cut])


@pytest.mark.parametrize("kind", [b"R", b"I", b"U", b"D", b"T", b"Y", b"O"])
def test_other_record_kinds_are_unsupported(kind: bytes) -> None:
    with pytest.raises(UnsupportedRecordError) as caught:
        decode(kind + bytes(20))
    assert caught.value.kind == kind.decode()


def test_message_with_invalid_utf8_prefix_is_refused() -> None:
    raw = b"M\x01" + bytes(8) + b"\xff\x00" + bytes(4)
    with pytest.raises(PgOutputError, match="UTF-8"):
        decode(raw)


def test_record_read_from_a_real_server_decodes() -> None:
    # Captured from pg_logical_slot_peek_binary_changes on PostgreSQL 15.
    raw = bytes.fromhex("4d010000000001d748f8746964696e67732e6f7574626f7800000000020102")
    assert decode(raw) == Message(0x1D748F8, "tidings.outbox", b"\x01\x02", True)


@given(lsns)
def test_lsn_text_round_trips(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


def test_lsn_text_is_written_the_postgres_way() -> None:
    assert format_lsn(0x16_B374D848) == "16/B374D848"
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn("123")
