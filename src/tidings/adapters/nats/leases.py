"""Sharing a topic's partitions among the members of a group, through leases in JetStream.

JetStream 2.9 lets several clients pull from one consumer, but not one client exclusively, so
two members pulling one partition would each get some of a key's events and the key's order
would be lost. Each member therefore pulls only the partitions it holds a *lease* on; the
leases and heartbeats are kept by a `LeaseBook` (see `tidings.adapters.nats.leasebook`).

Every ``lease_ttl / 3`` seconds (at once when nudged), each member heartbeats, lists the live
members, computes the same round-robin assignment (partition n goes to the ``n % members``-th
member id in sorted order), takes the free leases it is assigned, renews those it keeps and
releases the others. A crashed member's leases expire ``lease_ttl`` after its last renewal. A
released partition stops being pulled at once, the deliveries it had buffered are nacked, and
the lease is given back when the deliveries already handed out are settled (or after the ack
deadline, when the server redelivers them anyway), so the next owner starts after them and
per-key order holds across a rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Final, Protocol

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from tidings.adapters.nats.connection import wait_event
from tidings.adapters.nats.leasebook import LeaseBook
from tidings.adapters.nats.naming import GroupNames

__all__ = ["Coordinator", "PartitionOwner", "assigned"]

_STOP_WAIT: Final = 5.0
log: Final = logging.getLogger("tidings.nats")


def assigned(members: list[str], me: str, partitions: int) -> set[int]:
    """Return the partitions a member is assigned: round robin over the sorted member ids."""
    ordered = sorted(set(members) | {me})
    index, count = ordered.index(me), len(ordered)
    return {partition for partition in range(partitions) if partition % count == index}


class PartitionOwner(Protocol):
    """What the coordinator drives: a member that pulls the partitions it is given."""

    def assign(self, partition: int) -> None:
        """Start pulling a partition."""

    def revoke(self, partition: int) -> None:
        """Stop pulling a partition and give back what was buffered but not handed out."""

    def drained(self, partition: int) -> bool:
        """Return True when no delivery of the partition handed out is still unsettled."""


@dataclass(slots=True)
class _Lease:
    seq: int
    renewed: float
    releasing: float | None = None


class Coordinator:
    """Keeps one member's share of a group's partitions (see the module docstring)."""

    def __init__(
        self,
        nc: Client,
        group: GroupNames,
        partitions: int,
        owner: PartitionOwner,
        *,
        ttl: float,
        drain_limit: float,
    ) -> None:
        self._nc = nc
        self._group, self._partitions, self._owner = group, partitions, owner
        self._ttl, self._drain_limit = ttl, drain_limit
        self.member_id = NUID().next().decode()
        self._book = LeaseBook(nc, group, self.member_id, ttl)
        self._leases: dict[int, _Lease] = {}
        self._nudged = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._nudges: Subscription | None = None

    async def start(self) -> None:
        """Join the group: take a first share of partitions, then keep it in the background."""
        self._nudges = await self._nc.subscribe(self._group.nudge, cb=self._on_nudge)
        await self._cycle()
        await self._nudge()
        self._task = asyncio.create_task(self._loop(), name="tidings-nats-leases")

    def wake(self) -> None:
        """Run a cycle now (after a reconnect, say)."""
        self._nudged.set()

    async def halt(self) -> None:
        """Stop the background cycles (the leases are still held)."""
        self._stopping = True
        self._nudged.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=_STOP_WAIT)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    @property
    def held(self) -> list[int]:
        """The partitions this member holds leases on."""
        return sorted(self._leases)

    async def leave(self) -> None:
        """Give every lease back and leave the group (after `halt` and the owner's revokes)."""
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._leave()
        if self._nudges is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._nudges.unsubscribe()

    async def _leave(self) -> None:
        for partition, lease in self._leases.items():
            await self._book.release(partition, lease.seq)
        self._leases.clear()
        await self._book.leave()
        await self._nudge()

    async def _loop(self) -> None:
        while not self._stopping:
            await wait_event(self._nudged, self._ttl / 3)
            self._nudged.clear()
            if self._stopping:
                return
            try:
                await self._cycle()
            except (nats.errors.Error, OSError) as exc:
                log.debug("lease cycle of %s failed: %r", self._group.group, exc)
                self._expire_stale()

    async def _cycle(self) -> None:
        now = await self._book.heartbeat()
        members = await self._book.members(now)
        desired = assigned(members, self.member_id, self._partitions)
        for partition, lease in list(self._leases.items()):
            if partition in desired:
                await self._keep(partition, lease)
            else:
                await self._release(partition, lease)
        for partition in sorted(desired - self._leases.keys()):
            seq = await self._book.take(partition, now)
            if seq is not None:
                self._leases[partition] = _Lease(seq, time.monotonic())
                self._owner.assign(partition)

    async def _keep(self, partition: int, lease: _Lease) -> None:
        if lease.releasing is not None:  # assigned back before it was given away
            lease.releasing = None
            self._owner.assign(partition)
        await self._renew(partition, lease)

    async def _renew(self, partition: int, lease: _Lease) -> None:
        seq = await self._book.renew(partition, lease.seq)
        if seq is None:
            log.warning("lost the lease of %s[%d]", self._group.topic.topic, partition)
            del self._leases[partition]
            self._owner.revoke(partition)
            return
        lease.seq, lease.renewed = seq, time.monotonic()

    async def _release(self, partition: int, lease: _Lease) -> None:
        now = time.monotonic()
        if lease.releasing is None:
            lease.releasing = now
            self._owner.revoke(partition)
        if self._owner.drained(partition) or now - lease.releasing > self._drain_limit:
            del self._leases[partition]
            await self._book.release(partition, lease.seq)
            await self._nudge()
        else:
            await self._renew(partition, lease)

    async def _nudge(self) -> None:
        await self._nc.publish(self._group.nudge, self.member_id.encode())

    async def _on_nudge(self, msg: Msg) -> None:
        if msg.data.decode() != self.member_id:
            self._nudged.set()

    def _expire_stale(self) -> None:
        """Stop pulling partitions whose lease may have expired while the server was away."""
        now = time.monotonic()
        for partition, lease in list(self._leases.items()):
            if now - lease.renewed > self._ttl * 0.9:
                del self._leases[partition]
                self._owner.revoke(partition)
