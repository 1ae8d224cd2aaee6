"""The embedded log broker on SQLite (``sqlite:///path``), the default broker.

Topics are partitioned logs in one database file, with consumer groups, their cursors and their
pending deliveries in the same file, so several processes on one machine publish and consume
together, and everything survives a restart. The model (claims, leases, fair shares of
partitions, committed offsets) is the one every tidings broker follows; see
`tidings.messaging.base`.

Writes go through a group commit (`tidings.adapters.sqlite.broker_commit`): concurrent
publishes, claims and settlements of the process share one transaction and one fsync.
Consumers wake at once in the same process; across processes a poller watches
``PRAGMA data_version`` on the writer's connection (it changes when another connection
commits) every 20 ms. A delivery
nacked with a delay, or left unsettled past its deadline, becomes visible at a stored time; a
waiting consumer sleeps until the earliest such time of its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Final

from tidings.adapters.sqlite import broker_claims as claims
from tidings.adapters.sqlite import broker_ops as ops
from tidings.adapters.sqlite import broker_sql as q
from tidings.adapters.sqlite import broker_transfer as transfer
from tidings.adapters.sqlite.broker_commit import GroupCommit, Work, now_us
from tidings.adapters.sqlite.connection import SQLiteThread, Synchronous, path_from_url
from tidings.events import Event
from tidings.messaging.base import BrokerBase, Claimed, ClaimResult, Member, Outgoing
from tidings.messaging.base import session_us as member_session_us
from tidings.messaging.ports import (
    Capabilities,
    Operation,
    PublishResult,
    Retention,
    Support,
    TopicInfo,
)
from tidings.messaging.transfer import StoredMessage, TopicTransfer

__all__ = ["SQLITE_CAPABILITIES", "SQLiteBroker"]

SQLITE_CAPABILITIES: Final = Capabilities(support=dict.fromkeys(Operation, Support.NATIVE))
_US: Final = 1_000_000
_log: Final = logging.getLogger(__name__)


class SQLiteBroker(BrokerBase, TopicTransfer):
    """A broker in one SQLite database file, shared by every process that opens it.

    Args:
        path: The database file, or a ``sqlite:///relative.db`` / ``sqlite:////abs.db`` URL.
        synchronous: SQLite's durability setting. ``FULL`` (default) fsyncs every commit, so a
            returned publish survives power loss; ``NORMAL`` survives a process crash only.
        poll_interval: Seconds between checks for commits by other processes.
        await_acks: Whether ``ack``, ``nack`` and ``extend`` return only once committed. By
            default they return once queued for the group commit, which starts at once: a
            consumer that acks one delivery at a time is then not held to one fsync per event.
            An ack lost to a crash before that commit means one more delivery, never a lost
            event; closing the subscription or the broker waits for every queued settlement.
            ``reject`` always waits (it writes the dead-letter topic).
        max_event_bytes: Largest encoded event accepted (default 1 MiB).
    """

    capabilities = SQLITE_CAPABILITIES

    def __init__(
        self,
        path: str | Path = "tidings.db",
        *,
        synchronous: Synchronous = "FULL",
        poll_interval: float = 0.02,
        await_acks: bool = False,
        max_event_bytes: int | None = None,
    ) -> None:
        super().__init__()
        is_url = isinstance(path, str) and "://" in path
        self.path = path_from_url(path) if is_url else Path(path)  # type: ignore[arg-type]
        if max_event_bytes is not None:
            self.max_event_bytes = max_event_bytes
        self.poll_interval = poll_interval
        self.await_acks = await_acks
        self._writer = SQLiteThread(self.path, synchronous=synchronous, name="tidings-broker-w")
        self._commit = GroupCommit(self._writer)
        self._poller: asyncio.Task[None] | None = None

    async def _open_storage(self) -> None:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._writer.start()
        await self._writer.run(lambda conn: conn.executescript(q.SCHEMA), "create tables")

    async def _close_storage(self) -> None:
        await self._commit.drain()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._writer.close()

    # -- topics and publishing ---------------------------------------------------------------

    async def _ensure_topic(self, topic: str, partitions: int, retention: Retention) -> TopicInfo:
        def ensure(conn: sqlite3.Connection, _: int) -> ops.TopicRow:
            return ops.ensure_topic(conn, topic, partitions, retention)

        return (await self._commit.run(ensure)).info(topic)

    async def _append(self, topic: str, messages: Sequence[Outgoing]) -> list[PublishResult]:
        return await self._commit.run(partial(ops.append, topic=topic, messages=messages))

    # -- members and claims ------------------------------------------------------------------

    async def _join(self, member: Member) -> None:
        join = partial(
            claims.join,
            topic=member.topic,
            group=member.group,
            member=member.id,
            start=member.start,
            session_us=member_session_us(member),
        )
        member.joined = await self._commit.run(join)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._watch_other_processes())

    async def _claim(self, member: Member, limit: int) -> ClaimResult:
        session_us = member_session_us(member)
        request = claims.ClaimRequest(
            _ref(member),
            member.id,
            limit,
            member.next_lease(),
            int(member.ack_deadline * _US),
            session_us,
        )
        claimed, due_us = await self._commit.run(partial(claims.claim, request=request))
        heartbeat = session_us / 3 / _US
        due = heartbeat if due_us is None else min(heartbeat, max(0.0, (due_us - now_us()) / _US))
        return ClaimResult(claimed, due)

    # -- settlement --------------------------------------------------------------------------

    async def _ack(self, member: Member, claimed: Claimed) -> None:
        ref = _ref(member)
        await self._settle(partial(claims.ack, ref=ref, claimed=claimed))

    async def _nack(self, member: Member, claimed: Claimed, delay: float) -> None:
        ref, delay_us = _ref(member), int(delay * _US)
        await self._settle(partial(claims.nack, ref=ref, claimed=claimed, delay_us=delay_us))

    async def _extend(self, member: Member, claimed: Claimed, seconds: float) -> None:
        ref, seconds_us = _ref(member), int(seconds * _US)
        await self._settle(partial(claims.extend, ref=ref, claimed=claimed, seconds_us=seconds_us))

    async def _settle(self, work: Work[int]) -> None:
        if self.await_acks:
            await self._commit.run(work)
        else:
            self._commit.submit(work, single=True).add_done_callback(_log_failure)

    async def _dead_letter(self, member: Member, claimed: Claimed, message: Outgoing) -> None:
        work = partial(
            claims.dead_letter,
            ref=_ref(member),
            claimed=claimed,
            topic=member.topic,
            message=message,
        )
        await self._commit.run(work)

    async def _leave(self, member: Member, unyielded: Sequence[Claimed]) -> None:
        ref = member.joined
        if not isinstance(ref, claims.GroupRef):
            return  # never joined
        work = partial(claims.leave, ref=ref, member=member.id, unyielded=unyielded)
        await self._commit.run(work)

    # -- replay and retention ----------------------------------------------------------------

    async def _replay(
        self, topic: str, group: str, offsets: Mapping[int, int] | None, since_us: int | None
    ) -> None:
        work = partial(ops.replay, topic=topic, group=group, offsets=offsets, since_us=since_us)
        await self._commit.run(work)

    async def _enforce_retention(self) -> int:
        return await self._commit.run(ops.expire)

    # -- moving topics (tidings.messaging.transfer) -------------------------------------------

    async def describe_topic(self, topic: str) -> TopicInfo | None:
        """Return the topic's shape, or None when it does not exist."""
        await self._ensure_open()
        return await self._commit.run(partial(transfer.describe_topic, topic=topic))

    async def read_partition(
        self, topic: str, partition: int, *, from_offset: int = 0, limit: int = 1000
    ) -> list[StoredMessage]:
        """Return up to ``limit`` retained messages of a partition from an offset, in order."""
        await self._ensure_open()
        read = partial(
            transfer.read_partition,
            topic=topic,
            partition=partition,
            start=from_offset,
            limit=limit,
        )
        return await self._commit.run(read)

    async def group_positions(self, topic: str) -> Mapping[str, Mapping[int, int]]:
        """Return each group's committed offset per partition (after queued settlements)."""
        await self._ensure_open()
        return await self._commit.run(partial(transfer.group_positions, topic=topic))

    async def append_to_partition(
        self, topic: str, partition: int, messages: Sequence[tuple[Event, str | None]]
    ) -> list[PublishResult]:
        """Store (event, key) pairs at the end of one partition, in order, once per event id."""
        outgoing = [self._outgoing(event, key) for event, key in messages]
        await self._ensure_open()
        work = partial(
            transfer.append_to_partition, topic=topic, partition=partition, messages=outgoing
        )
        results = await self._commit.run(work)
        self._wakeup.notify()
        return results

    # -- wake-up across processes ------------------------------------------------------------

    async def _watch_other_processes(self) -> None:
        # On the writer's own connection, data_version changes only for other connections'
        # commits: this process's commits (already announced in process) wake no one twice.
        last = None
        while True:
            version = await self._writer.run(_data_version, "poll")
            if last is not None and version != last:
                self._wakeup.notify()
            last = version
            await asyncio.sleep(self.poll_interval)


def _ref(member: Member) -> claims.GroupRef:
    """Return where the (joined) member's group lives."""
    assert isinstance(member.joined, claims.GroupRef), f"{member!r} has not joined"
    return member.joined


def _log_failure(future: asyncio.Future[int]) -> None:
    """Log a settlement that failed to commit (the delivery will simply come back)."""
    if not future.cancelled() and future.exception() is not None:
        _log.warning("a settlement was not committed: %s", future.exception())


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


SQLiteLogBroker = SQLiteBroker
"""The name the style guide uses for this adapter."""
