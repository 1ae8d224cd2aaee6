"""What a member knows about one partition it holds: its unsettled events and its watermark.

Every message fetched from the partition becomes an `Entry` and stays until it is acked or
rejected. An entry is *held* while a delivery of it is out (until its deadline), *waiting*
after a nack until its delay passes, and *visible* otherwise. The partition's *watermark* is
its lowest entry's offset, else the offset after the last message fetched: the offset the group
commits, so a commit never passes an unsettled event, however concurrently the events of one
partition are worked on.

``prior`` is how far events had been handed out to the group when this member got the
partition, as the delivery ledger said; an entry below it was handed out before, so its first
delivery here is attempt 2. ``handed`` is how far this member handed events out (exactly), and
``recorded`` what the ledger says now: claims move it ahead of ``handed`` in strides (to the
cursor), so most claims need no ledger write; handing the partition over writes ``handed``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["Entry", "PartitionState"]


@dataclass(slots=True)
class Entry:
    """One unsettled message of a partition, as this member holds it."""

    offset: int
    key: str | None
    value: bytes
    flags: int
    headers: Mapping[str, str] | None
    attempt: int = 0
    lease: int = 0
    held: bool = False
    due: float = 0.0
    """Monotonic time: when a held entry's deadline passes, or a waiting one becomes visible."""


@dataclass(slots=True)
class PartitionState:
    """The entries of one partition and where reading it got to (see the module docstring)."""

    partition: int
    epoch: int
    cursor: int | None = None
    prior: int = 0
    handed: int = 0
    recorded: int = 0
    owned: bool = True
    entries: dict[int, Entry] = field(default_factory=dict)
    fresh: deque[Entry] = field(default_factory=deque)
    returned: dict[int, Entry] = field(default_factory=dict)
    held: dict[int, Entry] = field(default_factory=dict)
    committed: int | None = None

    def add(self, entry: Entry) -> None:
        """Take a fetched message (at or after the cursor) as a new entry."""
        if entry.offset < self.prior:
            entry.attempt = 1
        self.entries[entry.offset] = entry
        self.fresh.append(entry)
        self.cursor = entry.offset + 1

    def watermark(self) -> int | None:
        """The offset to commit: the lowest unsettled offset, else the cursor."""
        if self.entries:
            return min(self.entries)
        return self.cursor

    def take_visible(self, now: float, limit: int) -> Iterator[Entry]:
        """Yield up to ``limit`` visible entries: returned ones first, then fresh in order."""
        given = 0
        for entry in sorted(self.returned.values(), key=_offset):
            if given >= limit:
                return
            if entry.due <= now:
                del self.returned[entry.offset]
                given += 1
                yield entry
        while self.fresh and given < limit:
            entry = self.fresh.popleft()
            if entry.offset in self.entries and not entry.held:
                given += 1
                yield entry

    @classmethod
    def at(
        cls, partition: int, epoch: int, prior: int, *, cursor: int | None = None
    ) -> PartitionState:
        """Return the state of a partition taken over with the ledger at ``prior``."""
        return cls(partition, epoch, cursor=cursor, prior=prior, handed=prior, recorded=prior)

    def hold(self, entry: Entry, lease: int, deadline: float) -> None:
        """Hand an entry out under a lease until a deadline."""
        self.handed = max(self.handed, entry.offset + 1)
        entry.attempt += 1
        entry.held, entry.lease, entry.due = True, lease, deadline
        self.held[entry.offset] = entry

    def holding(self, offset: int, lease: int) -> Entry | None:
        """Return the entry held under that lease, or None when the lease is not current."""
        entry = self.held.get(offset)
        return entry if entry is not None and entry.lease == lease else None

    def settle(self, entry: Entry) -> None:
        """Forget an acked (or dead-lettered) entry."""
        self.held.pop(entry.offset, None)
        self.entries.pop(entry.offset, None)

    def release(self, entry: Entry, visible_at: float) -> None:
        """Take a held entry back; it becomes visible at ``visible_at``."""
        self.held.pop(entry.offset, None)
        entry.held, entry.lease, entry.due = False, 0, visible_at
        self.returned[entry.offset] = entry

    def unhand(self, entry: Entry) -> None:
        """Take back a hand-out that never reached the caller (its attempt is not counted)."""
        entry.attempt -= 1
        while (last := self.entries.get(self.handed - 1)) is not None and (
            self.handed > self.prior and last.attempt == 0
        ):
            self.handed -= 1

    def expire(self, now: float) -> None:
        """Make held entries whose deadline passed visible again."""
        for entry in [e for e in self.held.values() if e.due <= now]:
            self.release(entry, now)

    def next_due(self) -> float | None:
        """Monotonic time of the next deadline or nack delay (None: nothing is timed)."""
        times = [e.due for e in self.returned.values()] + [e.due for e in self.held.values()]
        return min(times, default=None)


def _offset(entry: Entry) -> int:
    return entry.offset


def monotonic() -> float:
    """The clock entries are timed by."""
    return time.monotonic()
