"""Producing to Kafka from asyncio: one idempotent producer per broker, polled on its own thread.

`Producer.produce` only queues a message (a quick C call, safe from the loop); the delivery
report arrives on the thread that calls `Producer.poll`, here a daemon thread per broker, and
is handed to the loop with ``call_soon_threadsafe``. A publish returns once every report of its
messages arrived, i.e. once the broker stored them (``acks=all``). The producer is idempotent
(``enable.idempotence``), so its own retries through an outage store nothing twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from tidings.adapters.kafka.clients import client_config, error_from
from tidings.adapters.kafka.options import KafkaOptions
from tidings.errors import BackendError

__all__ = ["Record", "Sender"]

_POLL_SECONDS: Final = 0.05


@dataclass(frozen=True, slots=True)
class Record:
    """One message to produce to an explicit partition."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes]


class Sender:
    """The broker's producer and the thread that polls it for delivery reports."""

    def __init__(self, servers: str, options: KafkaOptions) -> None:
        config = client_config(
            servers,
            options,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": options.linger * 1000,
                "message.timeout.ms": int(options.publish_timeout * 1000),
            },
        )
        self._producer = Producer(config)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._poll, name="tidings-kafka-producer", daemon=True
        )
        self._thread.start()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(_POLL_SECONDS)

    async def send(self, records: Sequence[Record]) -> list[tuple[int, int]]:
        """Produce records in order; return each one's (partition, offset) once all are stored."""
        places = await self.send_each(records)
        for place in places:
            if isinstance(place, BaseException):
                raise place
        return places  # type: ignore[return-value]

    async def send_each(self, records: Sequence[Record]) -> list[tuple[int, int] | BaseException]:
        """Produce records in order; return each one's place, or the error that stopped it.

        Every record's outcome is awaited, so a caller can remember what was stored before it
        raises for what was not (a retry must not store those twice).
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[tuple[int, int]]] = []
        for record in records:
            future: asyncio.Future[tuple[int, int]] = loop.create_future()
            futures.append(future)
            try:
                self._produce(record, _reporter(loop, future))
            except KafkaException as exc:  # refused at once (too large, unknown partition...)
                future.set_exception(
                    BackendError(f"refused a record for {record.topic!r}: {exc}", backend="kafka")
                )
        return list(await asyncio.gather(*futures, return_exceptions=True))

    def _produce(
        self, record: Record, report: Callable[[KafkaError | None, Message], None]
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    partition=record.partition,
                    headers=list(record.headers.items()),
                    on_delivery=report,
                )
                return
            except BufferError:  # the local queue is full: let the poller drain it
                self._producer.poll(_POLL_SECONDS)

    async def aclose(self) -> None:
        """Wait for queued messages (bounded by the publish timeout), then stop the poller."""
        await asyncio.to_thread(self._producer.flush, 5.0)
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)


def _reporter(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[tuple[int, int]]
) -> Callable[[KafkaError | None, Message], None]:
    def report(error: KafkaError | None, message: Message) -> None:
        loop.call_soon_threadsafe(_settle, future, error, message)

    return report


def _settle(
    future: asyncio.Future[tuple[int, int]], error: KafkaError | None, message: Message
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error_from(error, f"publish to {message.topic()!r}"))
    else:
        future.set_result((message.partition(), message.offset()))  # type: ignore[arg-type]
