"""One group member on the event loop: its partitions' entries, claims, settlements, commits.

A `KafkaMember` is what `KafkaBroker._join` makes for a subscription. Its `Poller` thread owns
the Kafka consumer (group membership, fetching, commits); the member keeps, per partition it
holds, the `PartitionState` (see `tidings.adapters.kafka.partitions`) and answers the poller's
rebalance questions:

- partitions revoked: commit each one's watermark (its lowest unsettled offset) before it goes;
  the state is kept in case the same partitions come straight back (eager rebalancing revokes
  everything on every join), and dropped otherwise: late settlements of its deliveries then
  change nothing, and the new holder starts from the committed watermark;
- partitions assigned: resume kept ones where they were, start new ones from the committed
  offset, reading the delivery ledger to count earlier attempts.

The delivery ledger is a second consumer group, ``<group>.tidings-delivered``, that never has
members: its committed offset in a partition is how far events were handed out. A claim that
hands out events past it moves it first, in strides (to the end of what was fetched, so one
admin request covers many claims), so a member that takes a partition over counts what a
crashed holder had received: an event handed out before is at least attempt 2. When a
partition goes away in order (revoked, or the member leaves) the ledger is set back to exactly
how far events were handed out; after a crash, fetched events that were never handed out count
one attempt too many. (Exact counts beyond 2 would need offset-commit metadata, which Tansu
drops.)

Settled offsets are committed in the background every ``commit_interval``; leaving the group
commits synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

from confluent_kafka import Message

from tidings.adapters.kafka.admin import Admin
from tidings.adapters.kafka.codec import read_headers
from tidings.adapters.kafka.partitions import Entry, PartitionState, monotonic
from tidings.adapters.kafka.poller import Poller
from tidings.errors import BackendError
from tidings.messaging.subscription import Claimed, ClaimResult, Member

__all__ = ["LEDGER_SUFFIX", "KafkaMember", "ledger_group"]

LEDGER_SUFFIX: Final = ".tidings-delivered"

_HIGH_WATER: Final = 2000
_STOP_SECONDS: Final = 30.0
_log: Final = logging.getLogger(__name__)


def ledger_group(group: str) -> str:
    """Return the name of a group's delivery ledger (a consumer group without members)."""
    return group + LEDGER_SUFFIX


class KafkaMember:
    """A member of a group on one topic (see the module docstring)."""

    def __init__(
        self,
        member: Member,
        *,
        config: dict[str, object],
        admin: Admin,
        commit_interval: float,
        wake: Callable[[], None],
        floors: Callable[[str, int], Awaitable[dict[int, int]]],
    ) -> None:
        self.member = member
        self._floors = floors
        self._admin = admin
        self._commit_interval = commit_interval
        self._wake = wake
        self._states: dict[int, PartitionState] = {}
        self._revoked: set[int] = set()
        self._joined = asyncio.Event()
        self._error: BackendError | None = None
        self._rotation = itertools.count()
        self._fresh = 0
        self._closed = False
        self._poller = Poller(config, member.topic, self, asyncio.get_running_loop())
        self._committer: asyncio.Task[None] | None = None

    @property
    def topic(self) -> str:
        """The topic."""
        return self.member.topic

    @property
    def group(self) -> str:
        """The group."""
        return self.member.group

    async def start(self, timeout: float) -> None:
        """Join the group; return once the first assignment arrived."""
        self._poller.start()
        self._committer = asyncio.create_task(self._commit_loop())
        try:
            async with asyncio.timeout(timeout):
                await self._joined.wait()
        except TimeoutError:
            await self.leave([])
            raise BackendError(
                f"joining group {self.group!r} on {self.topic!r} took over {timeout}s",
                backend="kafka",
            ) from None
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the poller's questions (Hooks) ---------------------------------------------------------

    def received(self, epoch: int, messages: list[Message]) -> None:
        """Take fetched messages into their partitions' states (stale ones are dropped)."""
        states, added = self._states, 0
        for message in messages:
            state = states.get(message.partition() or 0)
            if state is None or not state.owned or state.epoch > epoch:
                continue
            offset = message.offset() or 0
            if state.cursor is not None and offset < state.cursor:
                continue
            flags, headers = read_headers(message.headers())  # type: ignore[arg-type]
            key = message.key()
            text = None if key is None else key.decode(errors="replace")
            state.add(Entry(offset, text, message.value() or b"", flags, headers))
            added += 1
        self._fresh += added
        self._pace()
        self._wake()

    async def revoked(self, partitions: list[int]) -> dict[int, int]:
        """Return the watermarks to commit for partitions that are going away."""
        offsets = {}
        await self._write_exact_ledger([s for p in partitions if (s := self._states.get(p))])
        for partition in partitions:
            state = self._states.get(partition)
            if state is None:
                continue
            state.owned = False
            mark = state.watermark()
            if mark is not None:
                offsets[partition] = state.committed = mark
        self._revoked = set(partitions)
        return offsets

    async def assigned(self, epoch: int, partitions: list[int]) -> dict[int, int]:
        """Keep states that came straight back, start new ones; return where to resume."""
        starts, new = {}, []
        for partition in partitions:
            state = self._states.get(partition)
            if state is not None and partition in self._revoked:
                state.owned, state.epoch = True, epoch
                if state.cursor is not None:
                    starts[partition] = state.cursor
            else:
                new.append(partition)
        for gone in set(self._states) - set(partitions):
            del self._states[gone]
        delivered = await self._read_ledger(new)
        starts.update(await self._above_the_floor(new))
        for partition in new:
            self._states[partition] = PartitionState.at(
                partition, epoch, delivered.get(partition, 0)
            )
        self._revoked = set()
        self._recount()
        self._joined.set()
        self._wake()
        return starts

    async def _above_the_floor(self, partitions: list[int]) -> dict[int, int]:
        """Where new partitions start when retention's floor is above the group's offset."""
        if not partitions:
            return {}
        count = max(partitions) + 1
        try:
            floors = await self._floors(self.topic, count)
            if not any(floors.get(p, 0) for p in partitions):
                return {}
            committed = await self._admin.group_offsets(self.group, self.topic, count)
        except BackendError:  # the group then starts at its offset, retained or not
            _log.warning("could not read the retention floor of %r", self.topic, exc_info=True)
            return {}
        return {p: floors[p] for p in partitions if floors.get(p, 0) > committed.get(p, -1)}

    async def _read_ledger(self, partitions: list[int]) -> dict[int, int]:
        if not partitions:
            return {}
        count = max(partitions) + 1
        try:
            return await self._admin.group_offsets(ledger_group(self.group), self.topic, count)
        except BackendError:  # attempts of a crashed holder's events then count from 1
            _log.warning("could not read the delivery ledger of %r", self.group, exc_info=True)
            return {}

    def failed(self, error: Exception) -> None:
        """The poller died: fail the next claim."""
        self._error = (
            error if isinstance(error, BackendError) else BackendError(str(error), backend="kafka")
        )
        self._joined.set()
        self._wake()

    # -- claims and settlements -----------------------------------------------------------------

    async def claim(self, limit: int) -> ClaimResult:
        """Hand out up to ``limit`` visible entries, after moving the ledger past them."""
        self._raise_failure()
        now, deadline = monotonic(), self.member.ack_deadline
        lease = self.member.next_lease()
        taken: list[tuple[PartitionState, Entry]] = []
        for state in self._rotated():
            state.expire(now)
            for entry in state.take_visible(now, limit - len(taken)):
                state.hold(entry, lease, now + deadline)
                taken.append((state, entry))
            if len(taken) >= limit:
                break
        try:
            await self._record_delivered(taken)
        except BaseException:  # nothing was handed out: take the entries back, uncounted
            for state, entry in taken:
                state.release(entry, now)
                state.unhand(entry)
            raise
        self._recount()
        return ClaimResult([_claimed(s, e) for s, e in taken], self._due(now))

    def _rotated(self) -> list[PartitionState]:
        owned = [s for s in self._states.values() if s.owned]
        if not owned:
            return owned
        start = next(self._rotation) % len(owned)
        return owned[start:] + owned[:start]

    async def _record_delivered(self, taken: list[tuple[PartitionState, Entry]]) -> None:
        """Move the ledger ahead of every entry handed out, in strides (to the cursor)."""
        behind = {state.partition: state for state, _ in taken if state.handed > state.recorded}
        moves = {p: max(s.handed, s.cursor or 0) for p, s in behind.items()}
        await self._write_ledger(moves)

    async def _write_ledger(self, moves: dict[int, int]) -> None:
        if not moves:
            return
        await self._admin.alter_group_offsets(ledger_group(self.group), self.topic, moves)
        for partition, offset in moves.items():
            moved = self._states.get(partition)
            if moved is not None:
                moved.recorded = offset

    async def _write_exact_ledger(self, states: list[PartitionState]) -> None:
        """Before a partition goes: the ledger says exactly how far events were handed out."""
        moves = {s.partition: s.handed for s in states if s.recorded != s.handed}
        try:
            await self._write_ledger(moves)
        except BackendError:  # the next holder then counts some attempts one too high
            _log.warning("could not write the delivery ledger of %r", self.group, exc_info=True)

    def _due(self, now: float) -> float | None:
        times = [t for s in self._states.values() if s.owned and (t := s.next_due()) is not None]
        return max(0.0, min(times) - now) if times else None

    def _recount(self) -> None:
        self._fresh = sum(len(s.fresh) for s in self._states.values())
        self._pace()

    def _pace(self) -> None:
        if self._fresh > _HIGH_WATER:
            self._poller.room.clear()
        else:
            self._poller.room.set()

    def _held(self, claimed: Claimed) -> tuple[PartitionState, Entry] | None:
        state = self._states.get(claimed.partition)
        if state is None:
            return None
        entry = state.holding(claimed.offset, claimed.lease)
        return None if entry is None else (state, entry)

    def ack(self, claimed: Claimed) -> None:
        """Settle a held entry (a stale lease changes nothing)."""
        found = self._held(claimed)
        if found is not None:
            found[0].settle(found[1])

    def nack(self, claimed: Claimed, delay: float) -> None:
        """Make a held entry visible again after ``delay`` seconds."""
        found = self._held(claimed)
        if found is not None:
            found[0].release(found[1], monotonic() + delay)
            self._wake()

    def extend(self, claimed: Claimed, seconds: float) -> None:
        """Move a held entry's deadline to ``seconds`` from now."""
        found = self._held(claimed)
        if found is not None:
            found[1].due = monotonic() + seconds

    # -- commits, replay, leaving ----------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._commit_interval)
            offsets = self._moved_watermarks()
            if offsets:
                self._poller.command("commit", offsets)

    def _moved_watermarks(self) -> dict[int, int]:
        offsets = {}
        for state in self._states.values():
            mark = state.watermark()
            if state.owned and mark is not None and mark != state.committed:
                offsets[state.partition] = state.committed = mark
        return offsets

    async def replay(self, offsets: Mapping[int, int]) -> set[int]:
        """Move the partitions this member holds; return which of ``offsets`` it moved."""
        mine = {p: o for p, o in offsets.items() if (s := self._states.get(p)) and s.owned}
        if not mine:
            return set()
        await asyncio.wrap_future(self._poller.command("seek", mine))
        epoch = self._poller.epoch
        for partition, offset in mine.items():
            state = PartitionState.at(partition, epoch, offset, cursor=offset)
            state.committed = offset
            self._states[partition] = state
        self._recount()
        self._wake()
        return set(mine)

    async def leave(self, unyielded: Sequence[Claimed]) -> None:
        """Hand back what the member holds, commit its watermarks, leave the group."""
        if self._closed:
            return
        self._closed = True
        for claimed in unyielded:
            found = self._held(claimed)
            if found is not None:
                found[0].unhand(found[1])
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        await self._write_exact_ledger([s for s in self._states.values() if s.owned])
        offsets = {
            s.partition: m
            for s in self._states.values()
            if s.owned and (m := s.watermark()) is not None
        }
        self._states.clear()
        if self._poller.is_alive():
            done = self._poller.command("stop", offsets)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.wrap_future(done), _STOP_SECONDS)
            self._poller.room.set()
            await asyncio.to_thread(self._poller.join, _STOP_SECONDS)


def _claimed(state: PartitionState, entry: Entry) -> Claimed:
    return Claimed(
        state.partition,
        entry.offset,
        entry.key,
        entry.attempt,
        entry.lease,
        entry.value,
        entry.flags,
        entry.headers,
    )
