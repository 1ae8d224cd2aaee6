"""Publishing events to a topic's partition streams, pipelined, with retries across reconnects.

The messages of a call are sent back to back, up to 4,000 awaiting their acks at a time, each
with a reply subject of an `AckInbox` round, and the call returns when JetStream has
acknowledged each one: the server stored it (see
`tidings.adapters.nats.durability` for what "stored" means on disk). A message whose ack does
not come (the connection dropped, the server restarted) is sent again until
``publish_timeout`` runs out; ``Nats-Msg-Id`` makes the resend harmless within the stream's
duplicate window. The events of one call go out in order, so one partition stores them in
order.

Partition: `partition_for` of the key (the ``key`` argument, else the event's
``partitionkey``); an event without any key goes to ``crc32(event id) % partitions``, so a
republished event lands on the partition that already holds its id and is dropped as a
duplicate there.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

import nats.errors
from nats.aio.client import Client

from tidings.adapters.nats import codec
from tidings.adapters.nats.acks import AckInbox, Round, StoredAck
from tidings.adapters.nats.connection import BACKEND, is_unavailable, translate_errors
from tidings.adapters.nats.naming import TopicNames
from tidings.errors import BackendUnavailableError
from tidings.events import Event
from tidings.messaging.ports import PublishResult, TopicInfo, partition_for

__all__ = ["Outgoing", "Publisher", "partition_of"]

_ACK_WAIT: Final = 5.0
_RETRY_PAUSE: Final = 0.25
_WINDOW: Final = 4000  # messages awaiting their acks at once (nats-py's publish_async default)


def partition_of(event: Event, key: str | None, partitions: int) -> int:
    """Return the partition an event goes to (see the module docstring)."""
    if key is None:
        key = event.partitionkey
    if key is not None:
        return partition_for(key, partitions)
    return zlib.crc32(event.id.encode()) % partitions


class Outgoing(NamedTuple):
    """One message ready to send (a tuple: made per event, it must be cheap to build)."""

    event_id: str
    partition: int
    subject: str
    payload: bytes
    headers: dict[str, str]


class Publisher:
    """Sends events to partition streams and waits for every ack."""

    def __init__(self, nc: Client, *, timeout: float) -> None:
        self._nc = nc
        self._inbox = AckInbox(nc)
        self._timeout = timeout

    async def open(self) -> None:
        """Subscribe to the acks (once, before the first `send`)."""
        await self._inbox.open()

    def prepare(
        self,
        info: TopicInfo,
        events: Sequence[Event],
        key: str | None,
        *,
        msg_id_prefix: str = "",
        extra: Mapping[str, str] | None = None,
    ) -> list[Outgoing]:
        """Encode events into the messages that carry them."""
        names = TopicNames.of(info.name)
        partitions = info.partitions
        subjects = [names.subject(partition) for partition in range(partitions)]
        out = []
        for event in events:
            partition = 0 if partitions == 1 else partition_of(event, key, partitions)
            payload, headers = codec.encode(
                event, key, msg_id=msg_id_prefix + event.id if msg_id_prefix else None, extra=extra
            )
            out.append(Outgoing(event.id, partition, subjects[partition], payload, headers))
        return out

    async def send(self, messages: Sequence[Outgoing]) -> list[PublishResult]:
        """Send messages; return where each was stored, once every one is acknowledged."""
        acks: dict[int, StoredAck] = {}
        deadline = time.monotonic() + self._timeout
        waiting = list(range(len(messages)))
        while waiting:
            failed: list[int] = []
            for start in range(0, len(waiting), _WINDOW):
                window = waiting[start : start + _WINDOW]
                failed += await self._attempt(messages, window, acks)
            waiting = failed
            if waiting:
                if time.monotonic() >= deadline:
                    raise BackendUnavailableError(
                        f"publish: {len(waiting)} events not acknowledged within {self._timeout}s",
                        backend=BACKEND,
                    )
                await asyncio.sleep(_RETRY_PAUSE)
        return [_result(message, acks[index]) for index, message in enumerate(messages)]

    async def _attempt(
        self, messages: Sequence[Outgoing], indexes: list[int], acks: dict[int, StoredAck]
    ) -> list[int]:
        """Send the messages at ``indexes`` in one round; return the indexes to send again."""
        round_ = self._inbox.begin(len(indexes))
        try:
            round_.expect(await self._publish(messages, indexes, round_))
            await asyncio.wait((round_.done,), timeout=_ACK_WAIT)
        finally:
            self._inbox.end(round_)
        failed = []
        for index in indexes:
            answer = round_.answers.get(index)
            if isinstance(answer, StoredAck):
                acks[index] = answer
            elif answer is None or is_unavailable(answer):
                failed.append(index)  # no ack in time, or no stream listening yet
            else:
                with translate_errors("publish"):
                    raise answer
        return failed

    async def _publish(
        self, messages: Sequence[Outgoing], indexes: list[int], round_: Round
    ) -> int:
        """Hand the messages to the connection in order; return how many it took."""
        publish = self._nc.publish
        sent = 0
        try:
            for index in indexes:
                message = messages[index]
                reply = round_.reply_to(index)
                await publish(message.subject, message.payload, reply, message.headers)
                sent += 1
        except (nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError):
            pass  # the rest is sent again after the pause
        return sent


def _result(message: Outgoing, ack: StoredAck) -> PublishResult:
    return PublishResult(message.event_id, message.partition, ack.seq - 1, ack.duplicate)
