"""Graduating a topic: copy it to another broker with its keys, its order and its groups.

`migrate_topic` (and ``tidings topics migrate SRC DST TOPIC``) moves a topic from one backend
to another, from the embedded SQLite broker to Kafka, say. Both brokers must implement
`tidings.messaging.transfer.TopicTransfer`. In order:

1. The destination topic is created with the source's partition count and retention, or, if it
   exists, must have the same partition count (else `TopicMigrationError`).
2. Each group's committed offset per partition is read from the source (before copying, so
   every position points at a copied message or at the end).
3. Each source partition is read in offset order and appended, page by page, to the *same*
   partition of the destination with the same keys, so per-key order and placement hold even
   where the destination hashes keys differently. Messages whose event id the destination
   partition already holds are not appended again: a second run, or a run after an
   interruption, copies only what is missing. A stored payload that is not an event cannot be
   copied through the port: it is skipped and reported (`TopicCopy.not_events`), never dropped
   silently.
4. Each group is moved (`Broker.replay`) in the destination to where its committed offset
   lands there: the first copied message at or after it, else the partition's end.

What a group's position does and does not carry (at-least-once, as everywhere in tidings): a
group's committed offset is its lowest unsettled one, so events it had acked *above* that
offset (after a delivery still in flight, or a nack) are delivered again in the destination.
Deliveries in flight and nacked events waiting for their delay are delivered again at once
there, counted from attempt 1; settling them on the source afterwards changes nothing in the
destination. Stop the source's consumers (and producers) before the final run.

The dead-letter topic (``TOPIC.dlq``) is migrated the same way when asked. Its copies keep
their events and keys, not the dead-letter headers (reason, attempts, origin): the port carries
(event, key) pairs only. A dead-letter topic holding one event twice (rejected by two groups)
keeps one copy, counted in `TopicCopy.already_there`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from tidings.errors import TidingsError
from tidings.events import Event
from tidings.messaging.ports import Broker, TopicInfo, dead_letter_topic
from tidings.messaging.transfer import StoredMessage, TopicTransfer

__all__ = [
    "DEFAULT_BATCH",
    "MigrationProgress",
    "MigrationReport",
    "NotAnEvent",
    "TopicCopy",
    "TopicMigrationError",
    "migrate_topic",
]

DEFAULT_BATCH: Final = 500


class TopicMigrationError(TidingsError):
    """Raised when a topic cannot be migrated; nothing is half-done that a rerun cannot finish.

    Attributes:
        topic: The topic being migrated.
    """

    def __init__(self, message: str, *, topic: str) -> None:
        super().__init__(message)
        self.topic = topic


@dataclass(frozen=True, slots=True)
class NotAnEvent:
    """A stored message that is not an event, so it was not copied."""

    topic: str
    partition: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class TopicCopy:
    """What migrating one topic did.

    Attributes:
        topic: The topic.
        partitions: Its partition count (the same on both sides).
        copied: Messages this run stored in the destination.
        already_there: Messages whose event id the destination already held.
        not_events: Messages skipped because they are not events.
        positions: Each group's destination offset per partition, as moved.
    """

    topic: str
    partitions: int
    copied: int
    already_there: int
    not_events: tuple[NotAnEvent, ...]
    positions: Mapping[str, Mapping[int, int]]


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What a migration did: the topic, then its dead-letter topic when it was copied too."""

    topics: tuple[TopicCopy, ...]

    @property
    def copied(self) -> int:
        """Messages stored in the destination by this run, over every topic."""
        return sum(t.copied for t in self.topics)

    @property
    def already_there(self) -> int:
        """Messages the destination already held, over every topic."""
        return sum(t.already_there for t in self.topics)

    @property
    def not_events(self) -> tuple[NotAnEvent, ...]:
        """Messages skipped because they are not events, over every topic."""
        return tuple(n for t in self.topics for n in t.not_events)


@dataclass(frozen=True, slots=True)
class MigrationProgress:
    """Where a migration is: called back after each page read from the source.

    Attributes:
        topic: The topic being copied.
        partition: The partition being copied.
        partitions: The topic's partition count.
        read: Messages of this topic read from the source so far.
    """

    topic: str
    partition: int
    partitions: int
    read: int


ProgressCallback = Callable[[MigrationProgress], None]


async def migrate_topic(
    source: Broker,
    destination: Broker,
    topic: str,
    *,
    batch: int = DEFAULT_BATCH,
    dead_letters: bool = True,
    progress: ProgressCallback | None = None,
) -> MigrationReport:
    """Copy a topic, its keys, order and group positions from ``source`` to ``destination``.

    Idempotent and resumable: run it again (after an interruption, or to pick up what was
    published meanwhile) and it stores nothing twice and moves the groups again. See the module
    docstring for what group positions carry.

    Args:
        source: The broker to copy from (a `TopicTransfer`).
        destination: The broker to copy to (a `TopicTransfer`).
        topic: The topic.
        batch: Messages read and appended per round trip.
        dead_letters: Also migrate ``TOPIC.dlq`` when the source has it.
        progress: Called after each page read.

    Raises:
        TopicMigrationError: A broker is not a `TopicTransfer`, the source has no such topic,
            or the destination's topic has another partition count.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    mover = _Mover(
        _transfer(source, "source", topic),
        _transfer(destination, "destination", topic),
        destination,
        batch,
        progress,
    )
    copies = [await mover.topic(topic)]
    dlq = dead_letter_topic(topic)
    if dead_letters and await mover.source.describe_topic(dlq) is not None:
        copies.append(await mover.topic(dlq))
    return MigrationReport(tuple(copies))


def _transfer(broker: Broker, role: str, topic: str) -> TopicTransfer:
    if not isinstance(broker, TopicTransfer):
        raise TopicMigrationError(
            f"the {role} broker ({type(broker).__name__}) cannot transfer topics:"
            " it does not implement tidings.messaging.transfer.TopicTransfer",
            topic=topic,
        )
    return broker


@dataclass(slots=True)
class _Placement:
    """Where one partition's committed offsets land in the destination, found while copying.

    ``waiting`` holds the source offsets still to place, ascending; each is placed at the first
    copied message at or after it, and whatever is left at the end goes to the partition's end.
    """

    waiting: list[int]
    placed: dict[int, int] = field(default_factory=dict)
    end: int = 0

    def copied(self, source_offset: int, target_offset: int) -> None:
        cut = bisect.bisect_right(self.waiting, source_offset)
        for committed in self.waiting[:cut]:
            self.placed[committed] = target_offset
        del self.waiting[:cut]
        self.end = max(self.end, target_offset + 1)

    def finish(self) -> dict[int, int]:
        for committed in self.waiting:
            self.placed[committed] = self.end
        self.waiting.clear()
        return self.placed


@dataclass(slots=True)
class _Tally:
    copied: int = 0
    already_there: int = 0
    read: int = 0
    not_events: list[NotAnEvent] = field(default_factory=list)


class _Mover:
    """One migration's brokers and settings; copies topic after topic."""

    def __init__(
        self,
        source: TopicTransfer,
        destination: TopicTransfer,
        broker: Broker,
        batch: int,
        progress: ProgressCallback | None,
    ) -> None:
        self.source, self.destination, self.broker = source, destination, broker
        self.batch, self.progress = batch, progress

    async def topic(self, topic: str) -> TopicCopy:
        info = await self._shape(topic)
        positions = await self.source.group_positions(topic)
        tally = _Tally()
        placements = []
        for partition in range(info.partitions):
            committed = {
                offsets[partition] for offsets in positions.values() if partition in offsets
            }
            placement = _Placement(sorted(committed))
            await self._copy_partition(info, partition, placement, tally)
            placements.append(placement.finish())
        moved = {}
        for group, offsets in positions.items():
            targets = {p: placements[p][c] for p, c in offsets.items() if p < info.partitions}
            await self.broker.replay(topic, group=group, offsets=targets)
            moved[group] = targets
        return TopicCopy(
            topic,
            info.partitions,
            tally.copied,
            tally.already_there,
            tuple(tally.not_events),
            moved,
        )

    async def _shape(self, topic: str) -> TopicInfo:
        info = await self.source.describe_topic(topic)
        if info is None:
            raise TopicMigrationError(f"the source has no topic {topic!r}", topic=topic)
        there = await self.destination.describe_topic(topic)
        if there is None:
            return await self.broker.create_topic(
                topic, partitions=info.partitions, retention=info.retention
            )
        if there.partitions != info.partitions:
            raise TopicMigrationError(
                f"topic {topic!r} exists in the destination with {there.partitions} partitions,"
                f" the source has {info.partitions}: per-key order cannot be kept across"
                " different partition counts; delete it there or migrate to another broker",
                topic=topic,
            )
        return info

    async def _copy_partition(
        self, info: TopicInfo, partition: int, placement: _Placement, tally: _Tally
    ) -> None:
        present = await self._present(info.name, partition, placement)
        offset = 0
        while page := await self._read(self.source, info.name, partition, offset):
            await self._copy_page(info.name, partition, page, present, placement, tally)
            offset = page[-1].offset + 1
            tally.read += len(page)
            if self.progress is not None:
                self.progress(MigrationProgress(info.name, partition, info.partitions, tally.read))

    async def _present(self, topic: str, partition: int, placement: _Placement) -> dict[str, int]:
        """Return the event ids the destination partition holds, with their offsets."""
        present: dict[str, int] = {}
        offset = 0
        while page := await self._read(self.destination, topic, partition, offset):
            for message in page:
                if message.event is not None:
                    present[message.event.id] = message.offset
            offset = page[-1].offset + 1
            placement.end = max(placement.end, offset)
        return present

    async def _read(
        self, side: TopicTransfer, topic: str, partition: int, offset: int
    ) -> list[StoredMessage]:
        """Return a page from ``offset``; raise if the broker breaks the read contract."""
        page = await side.read_partition(topic, partition, from_offset=offset, limit=self.batch)
        offsets = [message.offset for message in page]
        if offsets != sorted(set(offsets)) or (offsets and offsets[0] < offset):
            role = "source" if side is self.source else "destination"
            raise TopicMigrationError(
                f"the {role} broker ({type(side).__name__}) read partition {partition} of"
                f" {topic!r} from offset {offset} as offsets {offsets[:5]}...: not ascending"
                " from there, as TopicTransfer.read_partition promises",
                topic=topic,
            )
        return page

    async def _copy_page(
        self,
        topic: str,
        partition: int,
        page: list[StoredMessage],
        present: dict[str, int],
        placement: _Placement,
        tally: _Tally,
    ) -> None:
        missing: list[tuple[int, Event, str | None]] = []
        for message in page:
            if message.event is None:
                size = len(message.payload)
                tally.not_events.append(NotAnEvent(topic, partition, message.offset, size))
            elif message.event.id in present:
                tally.already_there += 1
                placement.copied(message.offset, present[message.event.id])
            else:
                missing.append((message.offset, message.event, message.key))
        if not missing:
            return
        pairs = [(event, key) for _, event, key in missing]
        results = await self.destination.append_to_partition(topic, partition, pairs)
        for (source_offset, event, _), result in zip(missing, results, strict=True):
            if result.duplicate:
                tally.already_there += 1
            else:
                tally.copied += 1
            if result.partition == partition:  # else: the same event id sits in another one
                present[event.id] = result.offset
                placement.copied(source_offset, result.offset)
