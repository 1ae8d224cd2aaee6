"""The dead-letter workbench: list, show, requeue and purge what a topic's consumers gave up on.

A rejected event lands on ``<topic>.dlq`` with its reason, attempts and origin in the headers.
`DeadLetterStore` is the small optional Protocol for working on those; a broker may implement
it natively. `dead_letters` returns the broker itself when it does, and otherwise
`PortDeadLetters`, which needs nothing but the `Broker` port:

- The dead-letter topic is read by one consumer group, ``tidings-dlq``. What that group has not
  acked *is* the topic's dead-letter queue: purging acks, requeueing republishes then acks, and
  listing reads and leaves everything unsettled (closing the subscription hands it back).
  Retention keeps what the group has not acked, as for any group.
- Reading stops when the group gets nothing new for ``idle`` seconds, or at ``limit`` entries
  (`show`, `requeue` and `purge` look at the first ``scan`` entries, 10,000 by default).
- A requeued event is a copy with a new id (the origin topic already holds the old id, and
  publishing is idempotent by id) and an extension ``requeuedfrom`` naming the original. The
  new id is derived from the original id and the entry's place in the dead-letter topic, so a
  requeue interrupted after publishing and run again publishes nothing new. With a delay, the
  workbench waits, then republishes: if it is stopped meanwhile, the entry stays in the queue.
- Every requeue and purge is recorded before the entry is acked: one event per entry on the
  topic ``tidings.dlq.audit`` (type ``tidings.dlq.requeued`` or ``tidings.dlq.purged``) saying
  who, when, which entry and why it had failed.

Two workbench commands running at once on the same topic share its entries as members of one
group do; run them one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import socket
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from tidings.events import Event
from tidings.messaging.ports import (
    DEAD_LETTER_SUFFIX,
    HEADER_ATTEMPTS,
    HEADER_ORIGIN,
    HEADER_REASON,
    Broker,
    Delivery,
    dead_letter_topic,
)

__all__ = [
    "AUDIT_TOPIC",
    "REQUEUED_FROM",
    "WORKBENCH_GROUP",
    "DeadLetter",
    "DeadLetterStore",
    "PortDeadLetters",
    "dead_letters",
    "default_actor",
]

AUDIT_TOPIC: Final = "tidings.dlq.audit"
WORKBENCH_GROUP: Final = "tidings-dlq"
REQUEUED_FROM: Final = "requeuedfrom"
_NAMESPACE: Final = uuid.UUID("0d7c3e51-2b9a-4c4f-8f0e-5a1d6b3c9e27")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a dead-letter queue.

    Attributes:
        event: The event as it was rejected.
        topic: The topic it was rejected from.
        reason: Why (the handler's error).
        attempts: Deliveries of it to the rejecting group.
        partition: Its partition in the dead-letter topic.
        offset: Its offset there.
    """

    event: Event
    topic: str
    reason: str
    attempts: int
    partition: int
    offset: int


@runtime_checkable
class DeadLetterStore(Protocol):
    """Works on the dead-letter queue of a topic (``topic`` names the origin, not the .dlq)."""

    async def list(self, topic: str, *, limit: int = 100) -> Sequence[DeadLetter]:
        """Return up to ``limit`` entries, in dead-letter order; the queue is unchanged."""
        ...

    async def show(self, topic: str, event_id: str) -> DeadLetter | None:
        """Return the entry of an event id, or None."""
        ...

    async def requeue(
        self, topic: str, event_ids: Collection[str] | None, *, actor: str, delay: float = 0.0
    ) -> Sequence[DeadLetter]:
        """Publish copies of the entries (None: all) to ``topic`` after ``delay`` seconds and
        remove them from the queue, recording each; return the entries requeued."""
        ...

    async def purge(
        self, topic: str, event_ids: Collection[str] | None, *, actor: str
    ) -> Sequence[DeadLetter]:
        """Remove the entries (None: all) from the queue, recording each; return them."""
        ...


def dead_letters(broker: Broker, *, idle: float = 0.3) -> DeadLetterStore:
    """Return the broker's own `DeadLetterStore`, or one built on the port."""
    if isinstance(broker, DeadLetterStore):
        return broker
    return PortDeadLetters(broker, idle=idle)


def default_actor() -> str:
    """Return ``user@host`` for the audit records."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class PortDeadLetters:
    """A `DeadLetterStore` on any `Broker`, through the group ``tidings-dlq`` (see above)."""

    def __init__(self, broker: Broker, *, idle: float = 0.3, scan: int = 10_000) -> None:
        self._broker = broker
        self._idle = idle
        self._scan = scan

    async def list(self, topic: str, *, limit: int = 100) -> Sequence[DeadLetter]:
        """Return up to ``limit`` entries, in dead-letter order; the queue is unchanged."""
        async with self._reading(topic, prefetch=limit) as held:
            return [_entry(d) for d in held]

    async def show(self, topic: str, event_id: str) -> DeadLetter | None:
        """Return the entry of an event id, or None."""
        entries = await self.list(topic, limit=self._scan)
        return next((entry for entry in entries if entry.event.id == event_id), None)

    async def requeue(
        self, topic: str, event_ids: Collection[str] | None, *, actor: str, delay: float = 0.0
    ) -> Sequence[DeadLetter]:
        """Republish copies of the entries after ``delay`` seconds, then remove them."""
        done: list[DeadLetter] = []
        async for chosen in self._batches(topic, event_ids, deadline=delay):
            if delay > 0:
                await asyncio.sleep(delay)
                delay = 0.0
            for delivery in chosen:
                done.append(await self._requeue_one(delivery, actor))
        return done

    async def purge(
        self, topic: str, event_ids: Collection[str] | None, *, actor: str
    ) -> Sequence[DeadLetter]:
        """Remove the entries (None: all) from the queue, recording each; return them."""
        done: list[DeadLetter] = []
        async for chosen in self._batches(topic, event_ids):
            for delivery in chosen:
                entry = _entry(delivery)
                await self._audit("tidings.dlq.purged", entry, actor)
                await delivery.ack()
                done.append(entry)
        return done

    async def _requeue_one(self, delivery: Delivery, actor: str) -> DeadLetter:
        entry = _entry(delivery)
        copy = _copy_of(delivery)
        await self._broker.publish(entry.topic, [copy], key=delivery.key)
        await self._audit("tidings.dlq.requeued", entry, actor, requeued_as=copy.id)
        await delivery.ack()
        return entry

    async def _batches(
        self, topic: str, event_ids: Collection[str] | None, *, deadline: float = 0.0
    ) -> AsyncIterator[Sequence[Delivery]]:
        """Yield the chosen entries a batch at a time, until a batch has none of them."""
        wanted = None if event_ids is None else set(event_ids)
        while wanted is None or wanted:
            async with self._reading(topic, prefetch=self._scan, extra=deadline) as held:
                chosen = [d for d in held if wanted is None or d.event.id in wanted]
                if not chosen:
                    return
                yield chosen
            if wanted is not None:
                wanted -= {d.event.id for d in chosen}

    @contextlib.asynccontextmanager
    async def _reading(
        self, topic: str, *, prefetch: int, extra: float = 0.0
    ) -> AsyncIterator[Sequence[Delivery]]:
        """Hold what the group gets until idle; closing hands back what was not settled."""
        subscription = self._broker.subscribe(
            _dlq_of(topic), group=WORKBENCH_GROUP, prefetch=prefetch, ack_deadline=30.0 + extra
        )
        try:
            yield await self._collect(subscription, prefetch)
        finally:
            closer = getattr(subscription, "aclose", None)
            if closer is not None:
                await closer()

    async def _collect(
        self, subscription: AsyncIterator[Delivery], limit: int
    ) -> Sequence[Delivery]:
        held: dict[tuple[int, int], Delivery] = {}
        while len(held) < limit:
            try:
                delivery = await asyncio.wait_for(anext(subscription), timeout=self._idle)
            except TimeoutError:
                break
            held.setdefault((delivery.partition, delivery.offset), delivery)
        return [held[place] for place in sorted(held)]

    async def _audit(
        self, action: str, entry: DeadLetter, actor: str, *, requeued_as: str | None = None
    ) -> None:
        data: dict[str, object] = {
            "topic": entry.topic,
            "event_id": entry.event.id,
            "event_type": entry.event.type,
            "reason": entry.reason,
            "attempts": entry.attempts,
            "actor": actor,
        }
        if requeued_as is not None:
            data["requeued_as"] = requeued_as
        event = Event(type=action, source="/tidings/dlq", subject=entry.topic, data=data)
        await self._broker.publish(AUDIT_TOPIC, [event], key=entry.topic)


def _dlq_of(topic: str) -> str:
    return topic if topic.endswith(DEAD_LETTER_SUFFIX) else dead_letter_topic(topic)


def _entry(delivery: Delivery) -> DeadLetter:
    headers = delivery.headers
    origin = headers.get(HEADER_ORIGIN) or delivery.topic.removesuffix(DEAD_LETTER_SUFFIX)
    attempts = headers.get(HEADER_ATTEMPTS, "")
    return DeadLetter(
        event=delivery.event,
        topic=origin,
        reason=headers.get(HEADER_REASON, ""),
        attempts=int(attempts) if attempts.isdigit() else 0,
        partition=delivery.partition,
        offset=delivery.offset,
    )


def _copy_of(delivery: Delivery) -> Event:
    """The event to republish: a new id, fixed by the original and its place, naming it."""
    place = f"{delivery.event.id}@{delivery.topic}/{delivery.partition}/{delivery.offset}"
    extensions = {**delivery.event.extensions, REQUEUED_FROM: delivery.event.id}
    new_id = str(uuid.uuid5(_NAMESPACE, place))
    return delivery.event.replace(id=new_id, extensions=extensions)
