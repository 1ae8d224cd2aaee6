"""The partitions one member pulls, and the buffer they fill: the coordinator's `PartitionOwner`.

Each assigned partition gets a `Puller` and an `AttemptLedger`. Messages are buffered in
arrival order. When a partition is revoked, its puller stops asking for more; once its last
requests have ended, what it had buffered or received since is nacked in offset order and
recorded as unseen deliveries. The partition counts as drained (its lease may go to another
member) when that record is written and every delivery handed out from it is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from tidings.adapters.nats.attempts import AttemptLedger
from tidings.adapters.nats.naming import GroupNames
from tidings.adapters.nats.puller import Puller

__all__ = ["Intake", "Slot", "nak"]


@dataclass(slots=True, eq=False)
class Slot:
    """One assigned partition: its puller and ledger."""

    partition: int
    puller: Puller
    ledger: AttemptLedger
    writing: bool = False
    late: list[Msg] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Intake:
    """Pulls the partitions the coordinator assigns into one buffer."""

    def __init__(self, nc: Client, group: GroupNames, *, prefetch: int) -> None:
        self._nc = nc
        self._group = group
        self._prefetch = prefetch
        self.buffer: deque[tuple[Slot, Msg]] = deque()
        self.ready = asyncio.Event()
        self._slots: dict[int, Slot] = {}
        self._retired: dict[int, Slot] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    def assign(self, partition: int) -> None:
        """Start pulling a partition (after reading its ledger)."""
        slot = Slot(
            partition,
            Puller(
                self._nc,
                self._group.topic.stream(partition),
                self._group.consumer,
                on_message=lambda msg: self._arrived(slot, msg),
                on_late=lambda msg: self._late(slot, msg),
                quota=self._quota,
            ),
            AttemptLedger(self._nc, self._group, partition),
        )
        self._slots[partition] = slot
        self.spawn(self._start(slot))

    async def _start(self, slot: Slot) -> None:
        with contextlib.suppress(nats.errors.Error, OSError):
            await slot.ledger.load()
        slot.ready.set()
        if self._slots.get(slot.partition) is slot:
            await slot.puller.start()

    def revoke(self, partition: int, returned: Sequence[Msg] = ()) -> None:
        """Stop pulling a partition; nack what was buffered from it (recorded as unseen) and
        the ``returned`` deliveries that were handed out but not settled (the member closes)."""
        slot = self._slots.pop(partition, None)
        if slot is None:
            return
        self._retired[partition] = slot
        slot.puller.halt()  # from now on what arrives is late, not buffered
        given_back = [msg for owner, msg in self.buffer if owner is slot]
        self.buffer = deque(item for item in self.buffer if item[0] is not slot)
        for _ in given_back:
            slot.puller.release()
        slot.writing = True
        self.spawn(self._give_back(slot, given_back, list(returned)))

    async def _give_back(self, slot: Slot, unseen: list[Msg], returned: list[Msg]) -> None:
        try:
            await slot.puller.stop()
            await slot.ready.wait()
            # Nacked only now, all in offset order: a nack while the old requests were open
            # would hand the message straight back to them, behind its successors.
            unseen += slot.late
            for msg in sorted(unseen + returned, key=_seq):
                await nak(msg)
            await slot.ledger.record(map(_seq, unseen))
        finally:
            slot.writing = False

    def drained(self, partition: int) -> bool:
        """Return True when a revoked partition may go to another member."""
        slot = self._retired.get(partition)
        return slot is None or (not slot.writing and slot.puller.held == 0)

    def revoke_all(self, returned: Sequence[tuple[int, Msg]] = ()) -> None:
        """Revoke every partition, giving back the unsettled ``(partition, msg)`` handed out."""
        assigned = list(self._slots)
        for partition in assigned:
            self.revoke(partition, [msg for p, msg in returned if p == partition])
        for partition, msg in returned:
            if partition not in assigned:  # revoked earlier: its old requests are over
                self.spawn(nak(msg))

    def replayed(self, partitions: set[int]) -> None:
        """Drop buffered messages of recreated consumers, and pull from the new ones now."""
        stale = [item for item in self.buffer if item[0].partition in partitions]
        self.buffer = deque(item for item in self.buffer if item[0].partition not in partitions)
        for slot, _ in stale:
            slot.puller.release()
        for partition in partitions:
            current = self._slots.get(partition)
            if current is not None:
                current.ledger.forget()
                current.puller.reset()

    def reset(self) -> None:
        """Ask again for what pull requests lost with the connection would have brought."""
        for slot in self._slots.values():
            slot.puller.reset()

    async def settle(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for the background work spawned so far."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def spawn(self, work: Awaitable[None]) -> None:
        """Run work in the background, keeping a reference until it is done."""
        self.track(asyncio.ensure_future(work))

    def track(self, task: asyncio.Future[None]) -> None:
        """Keep a reference to a background task until it is done (`settle` waits for it)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _arrived(self, slot: Slot, msg: Msg) -> None:
        if self._slots.get(slot.partition) is not slot:  # revoked meanwhile
            slot.puller.release()
            slot.late.append(msg)
            return
        self.buffer.append((slot, msg))
        self.ready.set()

    def _late(self, slot: Slot, msg: Msg) -> None:
        slot.late.append(msg)

    def _quota(self) -> int:
        return max(1, self._prefetch // max(1, len(self._slots)))


def _seq(msg: Msg) -> int:
    return msg.metadata.sequence.stream


async def nak(msg: Msg) -> None:
    """Nack a message now, ignoring a lost connection (the ack deadline then redelivers it)."""
    with contextlib.suppress(nats.errors.Error, OSError):
        await msg.nak()
