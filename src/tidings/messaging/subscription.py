"""One member of a group reading a topic: claims in batches, decodes, yields, settles.

`Subscription` is what `BrokerBase.subscribe` returns: an async iterator of `Delivery` objects
and an async context manager. It claims up to ``prefetch`` deliveries at a time from its
backend, holds at most ``prefetch`` unsettled, and sleeps until the backend's wake-up (a
publish, a settlement, another process's commit) or until the next pending entry of the group
is due. A payload that does not decode into an `Event` never reaches the caller: it is moved to
the dead-letter topic, wrapped in a ``tidings.malformed`` event, with the reason in the headers.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Final, Self

import msgspec

from tidings.errors import ClosedError, TidingsError
from tidings.events import Event
from tidings.eventstore.records import decode_event, encode_event
from tidings.messaging.delivery import NO_HEADERS, SettleOnce, dead_letter_headers
from tidings.messaging.ports import Delivery, StartFrom

if TYPE_CHECKING:
    from tidings.messaging.base import BrokerBase

__all__ = [
    "MALFORMED_TYPE",
    "BrokerDelivery",
    "ClaimResult",
    "Claimed",
    "Member",
    "Outgoing",
    "Subscription",
]

MALFORMED_TYPE: Final = "tidings.malformed"
"""The type of the event that carries an undecodable payload into the dead-letter topic."""

_NO_LIMIT: Final = 2**62
_DECODE_ERRORS: Final = (msgspec.DecodeError, TidingsError, ValueError, TypeError, binascii.Error)
_log: Final = logging.getLogger(__name__)


class Member:
    """One subscription's identity in its group, and the source of its lease numbers.

    Leases start at a random 52-bit number, so a lease identifies one claim of one member.
    ``joined`` is where a backend keeps what joining told it (the SQLite broker: the ids of the
    topic and group).
    """

    __slots__ = ("_lease", "ack_deadline", "group", "id", "joined", "start", "topic")

    def __init__(
        self, topic: str, group: str, member_id: str, *, ack_deadline: float, start: StartFrom
    ) -> None:
        self.topic = topic
        self.group = group
        self.id = member_id
        self.ack_deadline = ack_deadline
        self.start = start
        self.joined: object = None
        self._lease = secrets.randbits(52)

    @classmethod
    def new(cls, topic: str, group: str, *, ack_deadline: float, start: StartFrom) -> Member:
        """Return a member with a fresh random id."""
        return cls(topic, group, secrets.token_hex(8), ack_deadline=ack_deadline, start=start)

    def next_lease(self) -> int:
        """Return the lease number of the member's next claim."""
        self._lease += 1
        return self._lease

    def __repr__(self) -> str:
        return f"<Member {self.id} of {self.group!r} on {self.topic!r}>"


@dataclass(slots=True)
class Outgoing:
    """One message on its way into a topic (not frozen: publishing makes one per event).

    Attributes:
        event_id: The id publishing deduplicates by; None for raw payloads and dead letters.
        key: The partition key (None: the backend spreads it).
        envelope: The encoded event (or raw bytes).
        flags: Envelope flags (`tidings.eventstore.records.BINARY_DATA`).
        headers: Headers stored with the message (dead-letter facts).
    """

    event_id: str | None
    key: str | None
    envelope: bytes
    flags: int = 0
    headers: Mapping[str, str] | None = None


@dataclass(slots=True)
class Claimed:
    """One entry a claim handed to a member, with the stored message."""

    partition: int
    offset: int
    key: str | None
    attempt: int
    lease: int
    envelope: bytes
    flags: int = 0
    headers: Mapping[str, str] | None = None


@dataclass(slots=True)
class ClaimResult:
    """What a claim returns: the entries, and seconds until the group's next entry is due."""

    claimed: list[Claimed] = field(default_factory=list)
    due: float | None = None


class BrokerDelivery(SettleOnce):
    """A delivery made by a `Subscription`; its settlements go to the subscription's backend."""

    __slots__ = ("_claimed", "_subscription")

    def __init__(self, event: Event, claimed: Claimed, subscription: Subscription) -> None:
        # The facts are set here rather than through SettleOnce.__init__'s keyword call: one
        # delivery is made per event, so making one is kept to plain assignments.
        headers = claimed.headers
        self._event = event
        self._topic = subscription.member.topic
        self._partition = claimed.partition
        self._offset = claimed.offset
        self._key = claimed.key
        self._attempt = claimed.attempt
        self._headers = NO_HEADERS if not headers else MappingProxyType(dict(headers))
        self._settled = False
        self._claimed = claimed
        self._subscription = subscription

    def _closed(self) -> bool:
        return self._subscription._closed

    async def _ack(self) -> None:
        sub = self._subscription
        try:
            await sub.broker._ack(sub.member, self._claimed)
        finally:
            sub.release()

    async def _nack(self, delay: float) -> None:
        sub = self._subscription
        try:
            await sub.broker._nack(sub.member, self._claimed, delay)
        finally:
            sub.release()

    async def _reject_to_dead_letter(self, headers: dict[str, str]) -> None:
        claimed = self._claimed
        message = Outgoing(None, claimed.key, claimed.envelope, claimed.flags, headers)
        await self._subscription.dead_letter(claimed, message)

    async def _extend(self, seconds: float | None) -> None:
        sub = self._subscription
        await sub.broker._extend(sub.member, self._claimed, seconds or sub.member.ack_deadline)


class Subscription(AsyncIterator[Delivery]):
    """A member of a group: yields deliveries until closed (see the module docstring)."""

    def __init__(self, broker: BrokerBase, member: Member, *, prefetch: int) -> None:
        self.broker = broker
        self.member = member
        self._prefetch = prefetch
        self._buffer: deque[Claimed] = deque()
        self._unsettled = 0
        self._closed = False
        self._broker_closed = False
        self._joined = False

    @property
    def closed(self) -> bool:
        """Whether the subscription ended (closed by its caller or with its broker)."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._unsettled} unsettled"
        return f"<Subscription {self.member.group!r} on {self.member.topic!r}, {state}>"

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            self._check()
            if self._buffer:  # the common case: no await, no wake-up of the loop
                claimed = self._buffer.popleft()
                try:
                    event = decode_event(claimed.envelope, claimed.flags)
                except _DECODE_ERRORS as exc:
                    await self._dead_letter_malformed(claimed, exc)
                    continue
                return BrokerDelivery(event, claimed, self)
            await self._wait_for_more()

    async def _wait_for_more(self) -> None:
        """Join if needed, claim, and sleep until woken when the claim brought nothing.

        The subscription counts as watching the broker's wake-up from taking its token until
        the sleep ends, so a settlement or publish made meanwhile always sets that token.
        """
        broker = self.broker
        token = broker._wakeup.token()
        broker._watchers += 1
        try:
            if not self._joined:
                await self.join()
            due = await self._fill()
            if not self._buffer:
                await _sleep_until(token, due)
        finally:
            broker._watchers -= 1

    def _check(self) -> None:
        if self._broker_closed:
            raise ClosedError(f"broker of the subscription to {self.member.topic!r}")
        if self._closed:
            raise StopAsyncIteration

    async def _fill(self) -> float | None:
        room = self._prefetch - self._unsettled
        if room <= 0:
            return None  # a settlement wakes us
        result = await self.broker._claim(self.member, room)
        self._unsettled += len(result.claimed)
        if self._closed:  # closed while claiming: hand them straight back, if still possible
            try:
                await self.broker._leave(self.member, result.claimed)
            except Exception:  # they come back at their ack deadline instead
                _log.warning(
                    "could not hand back %d claimed deliveries of %r; they return at their"
                    " ack deadline",
                    len(result.claimed),
                    self.member.topic,
                    exc_info=True,
                )
            return None
        self._buffer.extend(result.claimed)
        return result.due

    async def _dead_letter_malformed(self, claimed: Claimed, exc: BaseException) -> None:
        topic = self.member.topic
        wrapper = Event(
            type=MALFORMED_TYPE,
            source=f"/tidings/topics/{topic}",
            subject=f"{topic}/{claimed.partition}/{claimed.offset}",
            datacontenttype="application/octet-stream",
            data=claimed.envelope,
        )
        envelope, flags = encode_event(wrapper, limit=_NO_LIMIT)
        reason = f"malformed: not a tidings event ({type(exc).__name__}: {exc})"[:500]
        headers = dead_letter_headers(topic, reason, claimed.attempt)
        await self.dead_letter(claimed, Outgoing(None, claimed.key, envelope, flags, headers))

    async def dead_letter(self, claimed: Claimed, message: Outgoing) -> None:
        """Move a held entry to the dead-letter topic as ``message``."""
        await self.settled(self.broker._dead_letter(self.member, claimed, message))

    async def settled(self, settlement: Awaitable[None]) -> None:
        """Await a settlement, then count the entry as no longer held and wake the claimers."""
        try:
            await settlement
        finally:
            self.release()

    def release(self) -> None:
        """Count one held entry as settled; wake the subscriptions waiting for a claim.

        Only a subscription between taking its wake-up token and the end of its sleep can need
        the wake-up, so with none watching (the common case for a busy consumer) there is none.
        """
        self._unsettled -= 1
        broker = self.broker
        if broker._watchers:
            broker._wakeup.notify()

    async def aclose(self) -> None:
        """Leave the group: unsettled deliveries go back to it at once. Idempotent."""
        await self.end(broker_closed=False)

    async def end(self, *, broker_closed: bool) -> None:
        """Stop, hand back what the member holds (``broker_closed``: the broker is closing)."""
        if self._closed:
            return
        self._closed = True
        self._broker_closed = broker_closed
        self.broker._forget(self)
        unyielded, self._buffer = list(self._buffer), deque()
        try:
            if self._joined:
                await self.broker._leave(self.member, unyielded)
        finally:
            self.broker._wakeup.notify()  # the others may claim what it held; our waiter stops

    async def join(self) -> None:
        """Join the group now (else on the first ``__anext__``): a new group starts here."""
        if self._closed:
            raise ClosedError(f"subscription to {self.member.topic!r}")
        if not self._joined:
            await self.broker._ensure_open()
            await self.broker._join(self.member)
            self._joined = True
            if self._closed:  # closed while joining: leave again
                await self.broker._leave(self.member, [])

    async def __aenter__(self) -> Self:
        await self.join()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _sleep_until(token: asyncio.Event, due: float | None) -> None:
    """Wait for the wake-up token, or at most ``due`` seconds (None: no limit)."""
    try:
        async with asyncio.timeout(due):
            await token.wait()
    except TimeoutError:
        return
