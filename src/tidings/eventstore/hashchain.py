"""Walking the hash chains: tamper evidence for every stream and for the log.

Each record stores the hash of its content and two links: ``stream_hash`` chains it to the
previous record of its stream, ``log_hash`` to the previous record of the log. Altering a
record changes its content hash; inserting or removing one breaks a link or the dense
numbering; truncating the tail disagrees with the stream's and the log's recorded heads.
Scavenged records keep their hashes, so retention and crypto-shredding never break a chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field

from tidings.eventstore.ports import VerifyReport
from tidings.eventstore.records import GENESIS, SCAVENGED, StoredRecord, chain, content_hash

__all__ = ["ChainVerifier", "verify_records"]


@dataclass
class ChainVerifier:
    """Checks records fed in log order; stops at the first problem."""

    log_hash: bytes = GENESIS
    position: int = 0
    streams: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    problem: str | None = None
    problem_position: int | None = None

    def feed(self, record: StoredRecord) -> bool:
        """Check one record; return False (and remember why) at the first problem."""
        problem = self._check(record)
        if problem is not None:
            self.problem, self.problem_position = problem, record.position
            return False
        self.position, self.log_hash = record.position, record.log_hash
        self.streams[record.stream_id] = (record.version, record.stream_hash)
        return True

    def _check(self, record: StoredRecord) -> str | None:
        where = f"position {record.position} ({record.stream_id}@{record.version})"
        if record.position != self.position + 1:
            return f"{where}: expected position {self.position + 1}; records were removed"
        if not record.flags & SCAVENGED:
            assert record.envelope is not None
            expected = content_hash(
                record.stream_id,
                record.version,
                record.recorded_at_us,
                record.flags,
                record.envelope,
            )
            if expected != record.content_hash:
                return f"{where}: content does not match its hash; the record was altered"
        version, stream_hash = self.streams.get(record.stream_id, (0, GENESIS))
        if record.version != version + 1:
            return f"{where}: stream version follows {version}; records were removed or inserted"
        if chain(stream_hash, record.content_hash) != record.stream_hash:
            return f"{where}: stream chain broken; a record was altered, inserted or removed"
        if chain(self.log_hash, record.content_hash) != record.log_hash:
            return f"{where}: log chain broken; a record was altered, inserted or removed"
        return None

    def finish(self, heads: Mapping[str, tuple[int, bytes]], log_head: int) -> VerifyReport:
        """Compare the chains' ends with the heads the store recorded, and report."""
        if self.problem is None:
            self._check_heads(heads, log_head)
        return VerifyReport(
            ok=self.problem is None,
            records=self.position,
            streams=len(self.streams),
            problem=self.problem,
            position=self.problem_position,
        )

    def _check_heads(self, heads: Mapping[str, tuple[int, bytes]], log_head: int) -> None:
        if self.position > log_head:
            self.problem = (
                f"position {log_head + 1}: records exist past the recorded head {log_head};"
                " a record was inserted"
            )
            self.problem_position = log_head + 1
            return
        if log_head != self.position:
            self.problem = f"the log ends at {self.position} but its head says {log_head}"
            return
        for stream_id, (version, last_hash) in heads.items():
            if self.streams.get(stream_id, (0, GENESIS)) != (version, last_hash):
                self.problem = f"stream {stream_id!r}: its last record does not match its head"
                return


async def verify_records(
    records: AsyncIterable[StoredRecord],
    heads: Mapping[str, tuple[int, bytes]],
    log_head: int,
) -> VerifyReport:
    """Verify a whole log given in position order against the recorded heads."""
    verifier = ChainVerifier()
    async for record in records:
        if not verifier.feed(record):
            break
    return verifier.finish(heads, log_head)
