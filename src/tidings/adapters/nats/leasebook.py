"""Group membership and partition leases, stored as the last message per subject of a stream.

The stream ``tidings_groups`` keeps one message per subject (``max_msgs_per_subject=1``):

- ``tidings.group.<topic>.<group>.m.<member id>``: a member's heartbeat;
- ``tidings.group.<topic>.<group>.p.<partition>``: the partition's lease.

A live entry's payload is ``{"member": id, "ttl": seconds}``; an empty payload means "left" or
"released". An entry is live while the server's clock is less than ``ttl`` past the time the
server stored it, so every member judges expiry by the server's clock and the holder's own
ttl, never by its own clock. "Now" on the server is the stored time of the member's latest
heartbeat.

Taking or renewing a lease is a publish with ``Nats-Expected-Last-Subject-Sequence`` set to the
sequence the member last saw on that subject: of two members racing for a lease, one wins.
Nothing is ever deleted: the stream's ``max_age`` (an hour) only collects garbage, so
correctness never depends on when the server expires messages. (nats-server 2.9's file store
can keep reporting a subject whose last message was deleted or expired; this design reads
every entry it relies on and checks its time.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, cast

import nats.js.errors
from nats.aio.client import Client
from nats.js import api

from tidings.adapters.nats.connection import translate_errors, wrong_last_sequence
from tidings.adapters.nats.naming import GROUP_STREAM, GROUP_SUBJECTS, GroupNames

__all__ = ["Entry", "LeaseBook", "ensure_group_stream"]

_EXPECT_LAST: Final = "Nats-Expected-Last-Subject-Sequence"
_GARBAGE_AGE: Final = 3600.0
_ACTUAL: Final = re.compile(r"wrong last sequence: (\d+)")


async def ensure_group_stream(nc: Client) -> None:
    """Create the membership and lease stream unless it exists."""
    jsm = nc.jsm()
    with translate_errors("create the group stream"):
        try:
            await jsm.stream_info(GROUP_STREAM)
        except nats.js.errors.NotFoundError:
            await jsm.add_stream(
                name=GROUP_STREAM,
                subjects=[GROUP_SUBJECTS],
                storage=api.StorageType.FILE,
                max_msgs_per_subject=1,
                max_age=_GARBAGE_AGE,
                discard=api.DiscardPolicy.OLD,
            )


@dataclass(frozen=True, slots=True)
class Entry:
    """The last message on a subject: who holds it (None: released) and until when."""

    seq: int
    member: str | None
    stored: datetime
    ttl: float

    def live(self, now: datetime) -> bool:
        """Return True while the entry is held and not expired at server time ``now``."""
        return self.member is not None and (now - self.stored).total_seconds() < self.ttl


class LeaseBook:
    """One member's reads and writes of its group's entries."""

    def __init__(self, nc: Client, group: GroupNames, member_id: str, ttl: float) -> None:
        self._js, self._jsm = nc.jetstream(), nc.jsm()
        self._group, self._me, self._ttl = group, member_id, ttl
        self._body = json.dumps({"member": member_id, "ttl": ttl}).encode()
        self.now: datetime | None = None

    async def heartbeat(self) -> datetime:
        """Say this member is alive; return the server's time (of the heartbeat)."""
        ack = await self._js.publish(self._group.member(self._me), self._body)
        stored = await self._jsm.get_msg(GROUP_STREAM, ack.seq)
        assert stored.time is not None
        self.now = stored.time
        return stored.time

    async def leave(self) -> None:
        """Say this member has left."""
        await self._js.publish(self._group.member(self._me), b"")

    async def members(self, now: datetime) -> list[str]:
        """Return the ids of the members alive at server time ``now``."""
        info = await self._jsm.stream_info(GROUP_STREAM, subjects_filter=self._group.members)
        alive = []
        for subject in info.state.subjects or {}:
            entry = await self.read(subject)
            if entry is not None and entry.live(now):
                alive.append(cast(str, entry.member))
        return alive

    async def read(self, subject: str) -> Entry | None:
        """Return the last entry on a subject, or None when there is none."""
        try:
            msg = await self._jsm.get_last_msg(GROUP_STREAM, subject)
        except nats.js.errors.NotFoundError:
            return None
        body = cast(dict[str, object], json.loads(msg.data)) if msg.data else {}
        member = body.get("member")
        ttl = float(cast(float, body.get("ttl", 0.0)))
        assert msg.seq is not None
        assert msg.time is not None
        return Entry(msg.seq, member if isinstance(member, str) else None, msg.time, ttl)

    async def take(self, partition: int, now: datetime) -> int | None:
        """Take a partition's lease if it is free (or already ours); return its sequence."""
        subject = self._group.lease(partition)
        entry = await self.read(subject)
        if entry is not None and entry.live(now) and entry.member != self._me:
            return None
        return await self._write(subject, 0 if entry is None else entry.seq, self._body)

    async def renew(self, partition: int, seq: int) -> int | None:
        """Renew a held lease; return its new sequence, None when another member has it."""
        subject = self._group.lease(partition)
        renewed = await self._write(subject, seq, self._body, retry=False)
        if renewed is not None:
            return renewed
        now = self.now
        entry = await self.read(subject)
        if entry is None or entry.member == self._me or (now and not entry.live(now)):
            return await self._write(subject, 0 if entry is None else entry.seq, self._body)
        return None

    async def release(self, partition: int, seq: int) -> None:
        """Give a lease back (unless another member took it meanwhile)."""
        await self._write(self._group.lease(partition), seq, b"", retry=False)

    async def _write(
        self, subject: str, expected: int, body: bytes, *, retry: bool = True
    ) -> int | None:
        try:
            ack = await self._js.publish(subject, body, headers={_EXPECT_LAST: str(expected)})
        except nats.js.errors.APIError as exc:
            if not wrong_last_sequence(exc):
                raise
            actual = _ACTUAL.search(exc.description or "")
            if not retry or actual is None or expected != 0:
                return None
            # The server still counts a message we could not read (expired): expect that one.
            return await self._write(subject, int(actual.group(1)), body, retry=False)
        return ack.seq
