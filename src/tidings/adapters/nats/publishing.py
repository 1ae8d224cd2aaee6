"""Publishing events to a topic's partition streams, pipelined, with retries across reconnects.

Every message of a call is sent at once (nats-py ``publish_async``) and the call returns when
JetStream has acknowledged each one: the server stored it (see
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
from dataclasses import dataclass
from typing import Final

import nats.errors
from nats.js import JetStreamContext, api

from tidings.adapters.nats import codec
from tidings.adapters.nats.connection import BACKEND, is_unavailable, translate_errors
from tidings.adapters.nats.naming import TopicNames
from tidings.errors import BackendUnavailableError
from tidings.events import Event
from tidings.messaging.ports import PublishResult, TopicInfo, partition_for

__all__ = ["Outgoing", "Publisher", "partition_of"]

_ACK_WAIT: Final = 5.0
_RETRY_PAUSE: Final = 0.25


def partition_of(event: Event, key: str | None, partitions: int) -> int:
    """Return the partition an event goes to (see the module docstring)."""
    if key is None:
        key = event.partitionkey
    if key is not None:
        return partition_for(key, partitions)
    return zlib.crc32(event.id.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message ready to send."""

    event_id: str
    partition: int
    subject: str
    payload: bytes
    headers: dict[str, str]


class Publisher:
    """Sends events to partition streams and waits for every ack."""

    def __init__(self, js: JetStreamContext, *, timeout: float) -> None:
        self._js = js
        self._timeout = timeout

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
        out = []
        for event in events:
            partition = partition_of(event, key, info.partitions)
            payload, headers = codec.encode(
                event, key, msg_id=msg_id_prefix + event.id if msg_id_prefix else None, extra=extra
            )
            out.append(Outgoing(event.id, partition, names.subject(partition), payload, headers))
        return out

    async def send(self, messages: Sequence[Outgoing]) -> list[PublishResult]:
        """Send messages; return where each was stored, once every one is acknowledged."""
        acks: dict[int, api.PubAck] = {}
        deadline = time.monotonic() + self._timeout
        waiting = list(range(len(messages)))
        while waiting:
            waiting = await self._attempt(messages, waiting, acks)
            if waiting:
                if time.monotonic() >= deadline:
                    raise BackendUnavailableError(
                        f"publish: {len(waiting)} events not acknowledged within {self._timeout}s",
                        backend=BACKEND,
                    )
                await asyncio.sleep(_RETRY_PAUSE)
        return [_result(message, acks[index]) for index, message in enumerate(messages)]

    async def _attempt(
        self, messages: Sequence[Outgoing], indexes: list[int], acks: dict[int, api.PubAck]
    ) -> list[int]:
        futures: dict[int, asyncio.Future[api.PubAck]] = {}
        try:
            for index in indexes:
                message = messages[index]
                futures[index] = await self._js.publish_async(
                    message.subject, message.payload, headers=dict(message.headers)
                )
        except (nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError):
            pass  # the rest is retried after the pause
        if futures:
            await asyncio.wait(futures.values(), timeout=_ACK_WAIT)
        failed = [index for index in indexes if index not in futures]
        for index, future in futures.items():
            if not future.done():
                future.cancel()  # frees nats-py's slot; the message is resent
                failed.append(index)
            elif (error := future.exception()) is not None:
                if not is_unavailable(error):
                    with translate_errors("publish"):
                        raise error
                failed.append(index)
            else:
                acks[index] = future.result()
        return sorted(failed)


def _result(message: Outgoing, ack: api.PubAck) -> PublishResult:
    return PublishResult(
        event_id=message.event_id,
        partition=message.partition,
        offset=ack.seq - 1,
        duplicate=bool(ack.duplicate),
    )
