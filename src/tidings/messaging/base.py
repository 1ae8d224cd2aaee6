"""What the tidings brokers share: input checks, encoding, and the subscription plumbing.

A backend subclasses `BrokerBase` and implements the storage primitives (the ``_`` methods
below the line): append messages, claim deliveries for a member of a group, settle one, let a
member leave, move a group, apply retention. Everything else is written once, here and in
`tidings.messaging.subscription`: names are checked, events encoded (the same msgspec envelope
the event store keeps), keys defaulted to ``partitionkey``, deliveries decoded (a payload that
is not an event goes to the dead-letter topic with the reason), settlement made idempotent.

The model every backend follows, per topic and group:

- A partition is a log of messages at dense offsets. A group keeps, per partition, a *cursor*
  (the next offset never delivered) and a *pending* entry per offset delivered but not settled:
  its attempt count, when it becomes visible again, and who holds it under which lease.
- A *claim* hands a member up to ``limit`` visible entries and new messages, partition by
  partition in offset order. A member claims only from partitions that no other member holds
  in flight, and from at most its fair share of the partitions (``ceil(partitions / members)``),
  so one key is worked on by one member at a time and a joining member gets partitions as the
  others drain them.
- ``ack`` removes the entry; ``nack`` makes it visible after a delay; an entry whose holder
  neither settles nor extends it within the ack deadline becomes visible again; ``reject``
  removes it and appends the message to the dead-letter topic, in one step. A settlement whose
  lease is no longer current (the entry was handed to someone else) changes nothing.
- A group's committed offset in a partition is its lowest pending offset, else its cursor.
  Retention never removes a message at or above any group's committed offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from tidings.events import Event
from tidings.eventstore.base import DEFAULT_MAX_EVENT_BYTES, Wakeup
from tidings.eventstore.records import encode_event, to_micros
from tidings.lifecycle import Resource
from tidings.messaging.ports import (
    Broker,
    Capabilities,
    PublishResult,
    Retention,
    StartFrom,
    TopicInfo,
)
from tidings.messaging.subscription import Claimed, ClaimResult, Member, Outgoing, Subscription

__all__ = [
    "BrokerBase",
    "ClaimResult",
    "Claimed",
    "Member",
    "Outgoing",
    "check_name",
    "session_us",
]

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
DEFAULT_PARTITIONS: Final = 4
_log: Final = logging.getLogger(__name__)


def session_us(member: Member) -> int:
    """How long a member counts as alive without a claim, in microseconds: its ack deadline,
    within 1 to 10 seconds (the rule of every broker built on this model)."""
    return int(min(max(member.ack_deadline, 1.0), 10.0) * 1_000_000)


def check_name(kind: str, name: object) -> str:
    """Return a topic or group name, or raise ValueError: 1-200 of ``A-Za-z0-9._-``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"a {kind} name is 1 to 200 characters of A-Z a-z 0-9 . _ -: {name!r}")
    return name


class BrokerBase(Resource, Broker):
    """The public `Broker` methods, written once on top of a backend's storage primitives.

    Attributes:
        capabilities: What the backend supports, per operation (set by each backend).
        max_event_bytes: Largest encoded event accepted by `publish`.
        retention_interval: Seconds between runs of the retention job while open.
    """

    capabilities: Capabilities
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    retention_interval: float = 60.0

    def __init__(self) -> None:
        self._wakeup = Wakeup()
        self._watchers = 0  # subscriptions holding a wake-up token (see Subscription.release)
        self._subscriptions: set[Subscription] = set()
        self._retention_task: asyncio.Task[None] | None = None

    async def create_topic(
        self,
        topic: str,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        retention: Retention | None = None,
    ) -> TopicInfo:
        """Create a topic (idempotent: an existing topic keeps its partitions and retention)."""
        check_name("topic", topic)
        if not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"partitions must be a positive integer, got {partitions!r}")
        await self._ensure_open()
        return await self._ensure_topic(topic, partitions, retention or Retention())

    async def publish(
        self, topic: str, events: Sequence[Event], *, key: str | None = None
    ) -> list[PublishResult]:
        """Store events on a topic, in order; the key defaults to each event's partitionkey.

        Returns only when the events are stored. Creates the topic when missing. An event whose
        id the topic already holds is not stored again: its result has ``duplicate=True``.
        """
        check_name("topic", topic)
        messages = [self._outgoing(event, key) for event in events]
        await self._ensure_open()
        if not messages:
            return []
        results = await self._append(topic, messages)
        self._wakeup.notify()
        return results

    async def publish_raw(self, topic: str, payload: bytes, *, key: str | None = None) -> None:
        """Store bytes that may not be an event at all (for tests of the dead-letter path)."""
        check_name("topic", topic)
        await self._ensure_open()
        await self._append(topic, [Outgoing(None, key, bytes(payload))])
        self._wakeup.notify()

    def _outgoing(self, event: Event, key: str | None) -> Outgoing:
        if not isinstance(event, Event):
            raise TypeError(f"expected tidings.Event, got {type(event).__name__}")
        envelope, flags = encode_event(event, limit=self.max_event_bytes)
        return Outgoing(event.id, key if key is not None else event.partitionkey, envelope, flags)

    def subscribe(
        self,
        topic: str,
        *,
        group: str,
        ack_deadline: float = 30.0,
        start: StartFrom = StartFrom.EARLIEST,
        prefetch: int = 64,
    ) -> Subscription:
        """Join a group and yield deliveries until the subscription is closed.

        The subscription is an async iterator and an async context manager; ``aclose()`` (or
        leaving the ``async with``) hands its unsettled deliveries back to the group at once.
        ``prefetch`` bounds the deliveries the member holds unsettled at any time.
        """
        check_name("topic", topic)
        check_name("group", group)
        if ack_deadline <= 0:
            raise ValueError(f"ack_deadline must be > 0, got {ack_deadline}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self._check_not_closed()
        member = Member.new(topic, group, ack_deadline=ack_deadline, start=start)
        subscription = Subscription(self, member, prefetch=prefetch)
        self._subscriptions.add(subscription)
        return subscription

    async def replay(
        self,
        topic: str,
        *,
        group: str,
        offsets: Mapping[int, int] | None = None,
        since: datetime | None = None,
    ) -> None:
        """Move a group to given offsets per partition, or to the first event at or after a time.

        The group's pending deliveries in the moved partitions are dropped (settling them later
        changes nothing); the events from the new position on are delivered again, their
        attempts counted from 1. Partitions not named in ``offsets`` stay where they are.
        """
        check_name("topic", topic)
        check_name("group", group)
        if (offsets is None) == (since is None):
            raise ValueError("replay needs exactly one of offsets= or since=")
        if offsets is not None and any(o < 0 for o in offsets.values()):
            raise ValueError(f"offsets must be >= 0, got {dict(offsets)}")
        if since is not None and since.utcoffset() is None:
            raise ValueError("since must be a timezone-aware datetime")
        await self._ensure_open()
        since_us = None if since is None else to_micros(since)
        await self._replay(topic, group, offsets, since_us)
        self._wakeup.notify()

    async def enforce_retention(self) -> int:
        """Run the retention job now; return how many messages it removed."""
        await self._ensure_open()
        removed = await self._enforce_retention()
        if removed:
            self._wakeup.notify()
        return removed

    # -- lifecycle ------------------------------------------------------------------------------

    async def _open(self) -> None:
        await self._open_storage()
        self._retention_task = asyncio.create_task(self._retention_loop())

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retention_interval)
            with contextlib.suppress(Exception):  # the job runs again next interval
                await self._enforce_retention()

    async def _close(self) -> None:
        for subscription in list(self._subscriptions):
            try:
                await subscription.end(broker_closed=True)
            except Exception:  # its deliveries come back after their deadlines instead
                _log.warning("could not hand back %r's deliveries", subscription, exc_info=True)
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        await self._close_storage()

    def _forget(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    # -- what a backend implements -------------------------------------------------------------

    @abstractmethod
    async def _open_storage(self) -> None:
        """Connect and create what storage needs."""

    @abstractmethod
    async def _close_storage(self) -> None:
        """Release what `_open_storage` acquired."""

    @abstractmethod
    async def _ensure_topic(self, topic: str, partitions: int, retention: Retention) -> TopicInfo:
        """Create the topic unless it exists; return its shape."""

    @abstractmethod
    async def _append(self, topic: str, messages: Sequence[Outgoing]) -> list[PublishResult]:
        """Store messages durably (creating the topic), deduplicating by event id."""

    @abstractmethod
    async def _join(self, member: Member) -> None:
        """Register a member (creating the topic, and the group at the member's start)."""

    @abstractmethod
    async def _claim(self, member: Member, limit: int) -> ClaimResult:
        """Hand a member up to ``limit`` deliveries (see the model above); heartbeat it."""

    @abstractmethod
    async def _ack(self, member: Member, claimed: Claimed) -> None:
        """Remove a pending entry, if the member still holds it under that lease."""

    @abstractmethod
    async def _nack(self, member: Member, claimed: Claimed, delay: float) -> None:
        """Make a held entry visible again after ``delay`` seconds."""

    @abstractmethod
    async def _extend(self, member: Member, claimed: Claimed, seconds: float) -> None:
        """Move a held entry's deadline to ``seconds`` from now."""

    @abstractmethod
    async def _dead_letter(self, member: Member, claimed: Claimed, message: Outgoing) -> None:
        """Atomically remove a held entry and append ``message`` to the dead-letter topic."""

    @abstractmethod
    async def _leave(self, member: Member, unyielded: Sequence[Claimed]) -> None:
        """Release every entry the member holds, visible now; un-count unyielded attempts."""

    @abstractmethod
    async def _replay(
        self, topic: str, group: str, offsets: Mapping[int, int] | None, since_us: int | None
    ) -> None:
        """Move a group's cursors and drop its pending entries in the moved partitions."""

    @abstractmethod
    async def _enforce_retention(self) -> int:
        """Remove messages past retention that no group still needs; return how many."""
