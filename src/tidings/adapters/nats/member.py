"""One member of a group: what `NatsBroker.subscribe` returns.

Joining (``join()``, entering ``async with``, or the first ``__anext__``) makes sure the group's
consumers exist, one per partition (a new group starts at ``start``), and joins the group
through a `Coordinator`, which hands this member its share of the partitions; an `Intake` pulls
them into one buffer, handed out in arrival order (each partition's in offset order).
``prefetch`` bounds the events a member holds unsettled, split evenly over its partitions.

A payload that is not an event never reaches the caller: it goes to the dead-letter topic
wrapped in a ``tidings.malformed`` event, as on every backend. With ``max_deliver`` set, an event
delivered more often than that goes there too.

Closing it stops the pulling, nacks what it buffered or handed out and was not settled (so the
group gets those back at once), gives its leases back and leaves the group. Settling a delivery
after that raises `ClosedError`; iterating raises `ClosedError` once the broker is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from nats.aio.client import Client
from nats.aio.msg import Msg

from tidings.adapters.nats import codec
from tidings.adapters.nats.consumers import ensure_consumers
from tidings.adapters.nats.delivery import NatsDelivery
from tidings.adapters.nats.intake import Intake, Slot
from tidings.adapters.nats.leases import Coordinator
from tidings.adapters.nats.naming import GroupNames, TopicNames
from tidings.errors import ClosedError, TidingsError
from tidings.events import Event
from tidings.messaging.ports import Delivery, StartFrom, TopicInfo
from tidings.messaging.subscription import MALFORMED_TYPE

__all__ = ["DeadLetter", "Member", "MemberLinks"]

_SETTLE_WAIT: Final = 5.0

DeadLetter = Callable[[str, Event, str | None, dict[str, str], str], Awaitable[None]]
"""Publishes (topic, event, key, headers, message id) to the topic's dead-letter topic."""


@dataclass(frozen=True, slots=True)
class MemberLinks:
    """What a member uses of its broker."""

    nc: Client
    lease_ttl: float
    max_deliver: int | None
    topic: Callable[[str], Awaitable[TopicInfo]]
    before_join: Callable[[TopicInfo], Awaitable[object]]
    dead_letter: DeadLetter
    forget: Callable[[Member], None]


class Member:
    """A group member's stream of deliveries (see the module docstring)."""

    def __init__(
        self,
        links: MemberLinks,
        topic: str,
        *,
        group: str,
        ack_deadline: float,
        start: StartFrom,
        prefetch: int,
    ) -> None:
        self._links, self._topic, self._start = links, topic, start
        self._names: GroupNames = TopicNames.of(topic).group(group)
        self._ack_deadline = ack_deadline
        self._intake = Intake(links.nc, self._names, prefetch=prefetch)
        self._out: set[NatsDelivery] = set()
        self._coordinator: Coordinator | None = None
        self._join_lock = asyncio.Lock()
        self._closed = False
        self._broker_closed = False

    @property
    def closed(self) -> bool:
        """Whether the subscription ended (closed by its caller or with its broker)."""
        return self._closed

    @property
    def ack_deadline(self) -> float:
        """The ack deadline this member asked for."""
        return self._ack_deadline

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        await self.join()
        intake = self._intake
        while True:
            while not intake.buffer:
                self._check()
                intake.ready.clear()
                await intake.ready.wait()
            self._check()
            slot, msg = intake.buffer.popleft()
            delivery = await self._deliver(slot, msg)
            if delivery is not None:
                return delivery

    def _check(self) -> None:
        if self._broker_closed:
            raise ClosedError(f"broker of the subscription to {self._topic!r}")
        if self._closed:
            raise StopAsyncIteration

    async def join(self) -> None:
        """Join the group now (else on the first ``__anext__``): a new group starts here."""
        if self._coordinator is not None:
            return
        async with self._join_lock:
            if self._closed:
                raise ClosedError(f"subscription to {self._topic!r}")
            if self._coordinator is None:
                self._coordinator = await self._join()

    async def _join(self) -> Coordinator:
        info = await self._links.topic(self._topic)
        await self._links.before_join(info)
        await ensure_consumers(
            self._links.nc.jsm(),
            self._names,
            info.partitions,
            ack_wait=self._ack_deadline,
            start=self._start,
        )
        coordinator = Coordinator(
            self._links.nc,
            self._names,
            info.partitions,
            self._intake,
            ttl=self._links.lease_ttl,
            drain_limit=self._ack_deadline,
        )
        await coordinator.start()
        return coordinator

    async def _deliver(self, slot: Slot, msg: Msg) -> NatsDelivery | None:
        metadata = msg.metadata
        seq = metadata.sequence.stream
        attempt = slot.ledger.attempt(seq, metadata.num_delivered)
        try:
            event, key, headers = codec.decode(msg.data, msg.headers)
        except (TidingsError, ValueError, TypeError) as exc:
            reason = f"malformed: not a tidings event ({type(exc).__name__}: {exc})"[:500]
            wrapper = self._malformed(slot.partition, seq - 1, msg)
            await self._delivery(slot, msg, wrapper, None, {}, attempt).reject(reason)
            return None
        delivery = self._delivery(slot, msg, event, key, headers, attempt)
        limit = self._links.max_deliver
        if limit is not None and attempt > limit:
            await delivery.reject(f"delivered {limit} times without being settled")
            return None
        return delivery

    def _delivery(
        self,
        slot: Slot,
        msg: Msg,
        event: Event,
        key: str | None,
        headers: dict[str, str],
        attempt: int,
    ) -> NatsDelivery:
        delivery = NatsDelivery(
            event,
            msg,
            self,
            topic=self._topic,
            partition=slot.partition,
            offset=msg.metadata.sequence.stream - 1,
            key=key,
            attempt=attempt,
            headers=headers,
            release=lambda settled: self._settled(slot, settled),
        )
        self._out.add(delivery)
        return delivery

    def _malformed(self, partition: int, offset: int, msg: Msg) -> Event:
        return Event(
            type=MALFORMED_TYPE,
            source=f"/tidings/topics/{self._topic}",
            subject=f"{self._topic}/{partition}/{offset}",
            datacontenttype="application/octet-stream",
            data=bytes(msg.data),
        )

    def _settled(self, slot: Slot, delivery: NatsDelivery) -> None:
        self._out.discard(delivery)
        slot.puller.release()

    async def dead_letter(self, delivery: NatsDelivery, headers: dict[str, str]) -> None:
        """Publish a delivery's event to the dead-letter topic."""
        event = delivery.event
        # A malformed payload's wrapper is new each time: its place identifies it instead.
        origin = event.subject if event.type == MALFORMED_TYPE else event.id
        msg_id = f"{self._names.group}/{origin}"
        await self._links.dead_letter(self._topic, event, delivery.key, headers, msg_id)

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a settlement running until it is done; closing waits for it."""
        self._intake.track(task)

    def replayed(self, topic: str, group: str, partitions: set[int]) -> None:
        """The group's consumers on some partitions were recreated: drop what came before."""
        if topic == self._topic and group == self._names.group:
            self._intake.replayed(partitions)

    def reconnected(self) -> None:
        """Pull requests were lost with the connection: ask again, and rebalance now."""
        self._intake.reset()
        if self._coordinator is not None:
            self._coordinator.wake()

    async def aclose(self) -> None:
        """Leave the group: unsettled deliveries go back to it at once. Idempotent."""
        await self.end(broker_closed=False)

    async def end(self, *, broker_closed: bool) -> None:
        """Stop and hand back what the member holds (``broker_closed``: the broker is closing)."""
        if self._closed:
            return
        self._closed, self._broker_closed = True, broker_closed
        self._intake.ready.set()
        async with self._join_lock:
            coordinator = self._coordinator
            if coordinator is not None:
                await coordinator.halt()
            await self._intake.settle(_SETTLE_WAIT)  # settlements under way (a reject's move)
            returned = [(d.partition, d.message()) for d in self._out if not d.settled]
            self._out.clear()
            self._intake.revoke_all(returned)
            await self._intake.settle(_SETTLE_WAIT)
            if coordinator is not None:
                await coordinator.leave()
        self._links.forget(self)

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

    def __repr__(self) -> str:
        return f"<NatsSubscription {self._names.group!r} on {self._topic!r}>"
