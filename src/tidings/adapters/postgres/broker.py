"""The log broker on PostgreSQL (``postgresql://``): the SQLite broker's model, many processes.

Topics are partitioned logs in ``tidings_broker_*`` tables, with consumer groups, their
cursors and their pending deliveries beside them, so any number of processes on any number of
machines publish and consume together; the model (claims, leases, fair shares of partitions,
committed offsets, retention) is the one every tidings broker follows, see
`tidings.messaging.base`.

- Publishing (`tidings.adapters.postgres.broker_publish`): a partition's next offset is taken
  under its row lock, held to COMMIT, so offsets are dense and become visible in order, with
  concurrent publishers and without skipping a late commit. Concurrent publishes of one process
  share one transaction (group commit).
- Claims (`tidings.adapters.postgres.broker_claims`) are serialised per group by the group's
  row; settlements are batched (`tidings.adapters.postgres.broker_settle`).
- Deadlines and visibility times are the server's clock, so several processes agree.
- Consumers wake on LISTEN/NOTIFY, with a poll every ``poll_interval`` in case a notification
  was lost. The pool reconnects by itself after the server restarts; operations that are safe
  to run twice are retried once on a fresh connection, the others raise
  `BackendUnavailableError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from functools import partial
from typing import Any, Final, Literal, TypeVar

from psycopg import AsyncConnection, errors
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from tidings.adapters.postgres import broker_claims as claims
from tidings.adapters.postgres import broker_ops as ops
from tidings.adapters.postgres import broker_transfer as transfer
from tidings.adapters.postgres.broker_options import parse_url
from tidings.adapters.postgres.broker_publish import Placed, TopicRow, write
from tidings.adapters.postgres.broker_settle import (
    Settlement,
    Settlements,
    commit_batch,
    finish,
)
from tidings.adapters.postgres.broker_sql import BrokerStatements, channel, ddl
from tidings.adapters.postgres.connection import Listener, open_pool, translate_errors
from tidings.adapters.postgres.group_commit import GroupCommit, Request
from tidings.adapters.postgres.sql import create_schema
from tidings.errors import BackendError, BackendUnavailableError, ClosedError
from tidings.events import Event
from tidings.messaging.base import (
    DEFAULT_PARTITIONS,
    BrokerBase,
    Claimed,
    ClaimResult,
    Member,
    Outgoing,
    check_name,
)
from tidings.messaging.base import session_us as member_session_us
from tidings.messaging.ports import (
    Capabilities,
    Operation,
    PublishResult,
    Retention,
    Support,
    TopicInfo,
    dead_letter_topic,
    partition_for,
)
from tidings.messaging.transfer import StoredMessage, TopicTransfer

__all__ = ["POSTGRES_CAPABILITIES", "PostgresBroker"]

POSTGRES_CAPABILITIES: Final = Capabilities(support=dict.fromkeys(Operation, Support.NATIVE))
_US: Final = 1_000_000
_ROLLED_BACK: Final = (errors.DeadlockDetected, errors.SerializationFailure)
_ROLLED_BACK_RETRIES: Final = 3

Conn = AsyncConnection[TupleRow]
T = TypeVar("T")


class PostgresBroker(BrokerBase, TopicTransfer):
    """A broker in PostgreSQL 13 or later, shared by every process that opens the same schema.

    Args:
        url: ``postgresql://user@host:port/db``, optionally with ``?schema=...`` and the other
            options below as query parameters (keyword arguments win).
        schema: The schema of the tables (default ``public``); created when missing.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
        await_acks: Whether ``ack``, ``nack`` and ``extend`` return only once committed. By
            default they return once queued for the next settlement batch, which starts at
            once: a consumer that acks one delivery at a time is not held to one commit per
            event. An ack lost to a crash before that commit means one more delivery, never a
            lost event; closing a subscription or the broker waits for every queued settlement.
            ``reject`` always waits (it writes the dead-letter topic).
        poll_interval: Most seconds an idle consumer waits without a notification.
        max_event_bytes: Largest encoded event accepted (default 1 MiB).
    """

    capabilities = POSTGRES_CAPABILITIES

    def __init__(
        self,
        url: str = "postgresql://127.0.0.1/postgres",
        *,
        schema: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        await_acks: bool | None = None,
        poll_interval: float | None = None,
        max_event_bytes: int | None = None,
    ) -> None:
        super().__init__()
        overrides: dict[str, object] = {
            "schema": schema,
            "min_size": min_size,
            "max_size": max_size,
            "await_acks": await_acks,
            "poll_interval": poll_interval,
        }
        self.url = url
        self._conninfo, self.options = parse_url(url, overrides)
        if max_event_bytes is not None:
            self.max_event_bytes = max_event_bytes
        self._sql = BrokerStatements.render(self.options.schema)
        self._channel = channel(self.options.schema)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._listener = Listener(self._conninfo, self._channel, self._wakeup.notify)
        self._topics: dict[str, TopicRow] = {}
        self._keyless = itertools.count(secrets.randbelow(1 << 16))
        self._publishes: GroupCommit[list[PublishResult]] = GroupCommit(self._commit_publishes)
        self._settlements = Settlements(self._commit_settlements)
        self._background: set[asyncio.Future[Any]] = set()

    @property
    def schema(self) -> str:
        """The schema that holds the broker's tables."""
        return self.options.schema

    # -- lifecycle ----------------------------------------------------------------------------

    async def _open_storage(self) -> None:
        self._pool = await open_pool(
            self._conninfo,
            sizes=(self.options.min_size, self.options.max_size),
            name=f"tidings-broker-{self.schema}",
            timeout=self.options.connect_timeout,
            setup=self._create_tables,
        )
        self._listener.start()

    async def _create_tables(self, conn: Conn) -> None:
        members = f'"{self.schema}".tidings_broker_members'
        cursor = await conn.execute(self._sql.tables_exist, (members,))
        row = await cursor.fetchone()
        if row is not None and row[0]:
            return  # created in one transaction: the last table means all
        async with conn.transaction():
            await conn.execute(self._sql.ddl_lock)
            await conn.execute(create_schema(self.schema))
            for statement in ddl(self.schema):
                await conn.execute(statement)

    async def _close_storage(self) -> None:
        await self._publishes.drain()
        await self._settlements.drain()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._listener.aclose()
        if self._pool is not None:
            await self._pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        pool = self._pool
        if pool is None or pool.closed:
            raise ClosedError(type(self).__name__)
        try:
            with translate_errors():
                async with pool.connection(timeout=self.options.connect_timeout) as conn:
                    yield conn
        except BackendUnavailableError as exc:
            if _lost_connection(exc):  # after a restart: drop every dead one, not one per call
                await pool.check()
            raise

    async def _retrying(
        self, operation: Callable[[Conn], Awaitable[T]], *, retry: bool = True
    ) -> T:
        """Run a database operation to its end even if the caller is cancelled meanwhile.

        A query cancelled half-way could leave its transaction open on the server, holding row
        locks that stall the group's next claim; so the operation runs in a task of its own,
        which `aclose` waits for. With ``retry`` (for operations safe to repeat) it runs once
        more on a fresh connection if its connection turned out to be dead.
        """
        return await self._shielded(self._run(operation, retry))

    async def _shielded(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` in a task of its own that the caller's cancellation does not stop."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return await asyncio.shield(task)

    async def _run(self, operation: Callable[[Conn], Awaitable[T]], retry: bool) -> T:
        for attempt in itertools.count(1):
            try:
                async with self._connection() as conn:
                    return await operation(conn)
            except BackendUnavailableError as exc:
                if not retry or attempt > 1 or not _lost_connection(exc):
                    raise
            except BackendError as exc:
                # The server rolled the transaction back (a rare lock cycle between a claim and
                # another process's settlements): nothing happened, so running it again is safe.
                if attempt >= _ROLLED_BACK_RETRIES or not isinstance(exc.__cause__, _ROLLED_BACK):
                    raise
        raise AssertionError("unreachable")

    # -- topics and publishing ------------------------------------------------------------------

    async def _topic_row(
        self, name: str, partitions: int = DEFAULT_PARTITIONS, retention: Retention | None = None
    ) -> TopicRow:
        """Return a topic's row, creating the topic when missing (cached: shapes never change)."""
        known = self._topics.get(name)
        if known is not None:
            return known
        rule = retention or Retention()
        ensure = partial(
            ops.ensure_topic, s=self._sql, name=name, partitions=partitions, retention=rule
        )
        topic = await self._retrying(ensure)
        self._topics[name] = topic
        return topic

    async def _ensure_topic(self, topic: str, partitions: int, retention: Retention) -> TopicInfo:
        return (await self._topic_row(topic, partitions, retention)).info(topic)

    async def _append(self, topic: str, messages: Sequence[Outgoing]) -> list[PublishResult]:
        row = await self._topic_row(topic)
        return await self._publishes.submit(frozenset(), self._place(row, messages))

    def _place(self, row: TopicRow, messages: Sequence[Outgoing]) -> list[Placed]:
        count, topic_id, keyless = row.partitions, row.topic_id, self._keyless
        return [
            Placed(topic_id, partition_for(m.key, count, fallback=next(keyless)), m)
            if m.key is None
            else Placed(topic_id, partition_for(m.key, count), m)
            for m in messages
        ]

    async def _commit_publishes(
        self, group: list[Request[list[PublishResult]]]
    ) -> list[list[PublishResult] | BaseException]:
        """Commit every queued publish in one transaction; split the results per request."""
        payloads: list[list[Placed]] = [request.payload for request in group]  # type: ignore[misc]
        placed = [item for payload in payloads for item in payload]

        async def publish(conn: Conn) -> list[PublishResult]:
            return await write(conn, self._sql, placed, self._channel)

        idempotent = all(item.message.event_id is not None for item in placed)
        results = await self._retrying(publish, retry=idempotent)
        self._wakeup.notify()
        out: list[list[PublishResult] | BaseException] = []
        start = 0
        for payload in payloads:
            out.append(results[start : start + len(payload)])
            start += len(payload)
        return out

    # -- members and claims -------------------------------------------------------------------

    async def _join(self, member: Member) -> None:
        row = await self._topic_row(member.topic)

        async def join(conn: Conn) -> claims.GroupRef:
            group_id = await claims.ensure_group(
                conn, self._sql, row.topic_id, member.group, member.start
            )
            params = (group_id, member.id, member_session_us(member))
            await conn.execute(self._sql.upsert_member, params)
            return claims.GroupRef(row.topic_id, group_id, row.partitions)

        member.joined = await self._retrying(join)

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

        settle = self._settlements.take(request.ref.group_id)  # they commit with the claim
        settlements = [settlement for settlement, _ in settle]

        async def claim(conn: Conn) -> tuple[list[Claimed], int, int | None]:
            return await claims.claim(conn, self._sql, request, settlements)

        try:
            claimed, now_us, due_us = await self._retrying(claim)
        except BaseException:
            self._settlements.requeue(settle)  # committed by the flusher instead
            raise
        finish(settle)
        wait = min(session_us / 3 / _US, self.options.poll_interval)
        due = wait if due_us is None else min(wait, max(0.0, (due_us - now_us) / _US))
        return ClaimResult(claimed, due)

    # -- settlement ---------------------------------------------------------------------------

    async def _ack(self, member: Member, claimed: Claimed) -> None:
        await self._settle(_settlement("ack", member, claimed))

    async def _nack(self, member: Member, claimed: Claimed, delay: float) -> None:
        await self._settle(_settlement("nack", member, claimed, int(delay * _US)))

    async def _extend(self, member: Member, claimed: Claimed, seconds: float) -> None:
        await self._settle(_settlement("extend", member, claimed, int(seconds * _US)))

    async def _settle(self, settlement: Settlement) -> None:
        future = self._settlements.submit(settlement, wait=self.options.await_acks)
        if future is not None:
            await future

    async def _commit_settlements(self, batch: list[Settlement]) -> None:
        async def commit(conn: Conn) -> None:
            await commit_batch(conn, self._sql, batch)
            if any(item.kind == "nack" for item in batch):
                await conn.execute(self._sql.notify, (self._channel,))

        await self._retrying(commit)  # each one changes only an entry held under its lease

    async def _dead_letter(self, member: Member, claimed: Claimed, message: Outgoing) -> None:
        # Like a queued settlement, it completes even if the caller is cancelled meanwhile.
        await self._shielded(self._move_to_dead_letter(member, claimed, message))

    async def _move_to_dead_letter(
        self, member: Member, claimed: Claimed, message: Outgoing
    ) -> None:
        ref = _ref(member)
        target = await self._topic_row(dead_letter_topic(member.topic), ref.partitions)
        placed = self._place(target, [message])
        entry = (ref.group_id, claimed.partition, claimed.offset, claimed.lease)

        async def move(conn: Conn) -> None:
            async with conn.transaction():
                cursor = await conn.execute(self._sql.ack_one, entry)
                if cursor.rowcount:  # still held under this lease
                    await write(conn, self._sql, placed, self._channel)

        await self._retrying(move, retry=False)
        self._wakeup.notify()

    async def _leave(self, member: Member, unyielded: Sequence[Claimed]) -> None:
        ref = member.joined
        if not isinstance(ref, claims.GroupRef):
            return  # never joined
        await self._settlements.drain()
        # A claim of this member still running (its caller was cancelled) must commit first,
        # or what it takes would stay held by a member that is gone, until its deadline.
        await asyncio.gather(*self._background, return_exceptions=True)

        async def leave(conn: Conn) -> None:
            await claims.leave(conn, self._sql, ref, member.id, unyielded)
            await conn.execute(self._sql.notify, (self._channel,))

        await self._retrying(leave, retry=False)

    # -- replay and retention -----------------------------------------------------------------

    async def _replay(
        self, topic: str, group: str, offsets: Mapping[int, int] | None, since_us: int | None
    ) -> None:
        row = await self._topic_row(topic)

        async def replay(conn: Conn) -> None:
            await ops.replay(conn, self._sql, row, group, offsets=offsets, since_us=since_us)
            await conn.execute(self._sql.notify, (self._channel,))

        await self._retrying(replay)

    async def _enforce_retention(self) -> int:
        return await self._retrying(partial(ops.expire, s=self._sql))

    # -- topic transfer (tidings.messaging.transfer) --------------------------------------------

    async def describe_topic(self, topic: str) -> TopicInfo | None:
        """Return the topic's partitions and retention, or None when it does not exist."""
        row = await self._existing(topic)
        return None if row is None else row.info(topic)

    async def read_partition(
        self, topic: str, partition: int, *, from_offset: int = 0, limit: int = 1000
    ) -> list[StoredMessage]:
        """Return up to ``limit`` retained messages of a partition from an offset, in order."""
        row = await self._existing(topic)
        if row is None:
            return []

        async def read(conn: Conn) -> list[StoredMessage]:
            args = (row.topic_id, partition, from_offset, limit)
            return await transfer.read_partition(conn, self._sql, *args)

        return await self._retrying(read)

    async def group_positions(self, topic: str) -> Mapping[str, Mapping[int, int]]:
        """Return each group's committed offset per partition (groups that never joined: none)."""
        row = await self._existing(topic)
        if row is None:
            return {}

        async def positions(conn: Conn) -> dict[str, dict[int, int]]:
            return await transfer.group_positions(conn, self._sql, row.topic_id)

        return await self._retrying(positions)

    async def append_to_partition(
        self, topic: str, partition: int, messages: Sequence[tuple[Event, str | None]]
    ) -> list[PublishResult]:
        """Store (event, key) pairs at the end of one partition, in order; durable on return."""
        check_name("topic", topic)
        await self._ensure_open()
        row = await self._topic_row(topic)
        if not 0 <= partition < row.partitions:
            raise ValueError(f"topic {topic!r} has no partition {partition}")
        outgoing = [self._outgoing(event, key) for event, key in messages]
        placed = [Placed(row.topic_id, partition, message) for message in outgoing]
        if not placed:
            return []
        results = await self._publishes.submit(frozenset(), placed)
        self._wakeup.notify()
        return results

    async def _existing(self, topic: str) -> TopicRow | None:
        await self._ensure_open()
        known = self._topics.get(topic)
        if known is not None:
            return known

        async def describe(conn: Conn) -> TopicRow | None:
            return await transfer.describe(conn, self._sql, topic)

        row = await self._retrying(describe)
        if row is not None:
            self._topics[topic] = row  # a topic's shape never changes: ask once
        return row


def _ref(member: Member) -> claims.GroupRef:
    """Return where the (joined) member's group lives."""
    assert isinstance(member.joined, claims.GroupRef), f"{member!r} has not joined"
    return member.joined


def _settlement(
    kind: Literal["ack", "nack", "extend"], member: Member, claimed: Claimed, micros: int = 0
) -> Settlement:
    group_id = _ref(member).group_id
    return Settlement(kind, group_id, claimed.partition, claimed.offset, claimed.lease, micros)


def _lost_connection(exc: BackendUnavailableError) -> bool:
    """Whether a pooled connection died (and another may work), not the pool giving up."""
    return not isinstance(exc.__cause__, PoolTimeout | PoolClosed)
