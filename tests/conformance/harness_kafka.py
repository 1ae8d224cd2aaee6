"""The Kafka backend of the broker conformance suite: `KafkaBroker` on a private Tansu.

Every broker talks to the private, durable Tansu of `tests.messaging.kafka_service` (S3
storage in a moto server), not to the shared in-memory one on 9092: the durability cases need
storage that outlives the service, and the restart case SIGKILLs this Tansu. Cases keep apart
by their unique topic names; the topics a harness's brokers know are deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Final

import pytest

from tidings.messaging.ports import Broker, Capabilities
from tidings.testing.conformance.broker import BrokerHarness, Features

MARKS: Final = (pytest.mark.kafka,)
OPTIONS: Final = "?session_timeout=6&commit_interval=0.02"
"""A short session: a crashed member's partitions move after 6 s (Tansu's first JoinGroup
also takes about half of it)."""
_TEARDOWN_SECONDS: Final = 20.0


class KafkaBrokerHarness(BrokerHarness):
    """`KafkaBroker` on the private Tansu; the service restarted is that Tansu (SIGKILL)."""

    name = "kafka"
    features = Features(publish_raw=True, reopen=True, cross_process=True, restart_service=True)

    def __init__(self, url: str) -> None:
        self._url = url
        self._brokers: list[Broker] = []

    @property
    def capabilities(self) -> Capabilities:
        """`KafkaBroker.capabilities`."""
        from tidings.adapters.kafka import KafkaBroker

        return KafkaBroker.capabilities

    async def make_broker(self) -> Broker:
        """Return a new broker on the private Tansu."""
        from tidings.adapters.kafka import KafkaBroker

        broker = KafkaBroker(self._url + OPTIONS)
        self._brokers.append(broker)
        return await broker.open()

    async def open_again(self, broker: Broker) -> Broker:
        """Return another broker on the same service."""
        return await self.make_broker()

    async def aclose(self) -> None:
        """Delete the topics the brokers know (best effort), then close the brokers."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_TEARDOWN_SECONDS):
                await self._delete_topics()
        for broker in self._brokers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TEARDOWN_SECONDS):
                    await broker.aclose()

    async def _delete_topics(self) -> None:
        from tidings.adapters.kafka import KafkaBroker

        topics = {t for b in self._brokers if isinstance(b, KafkaBroker) for t in b.known_topics()}
        if not topics:
            return
        async with KafkaBroker(self._url) as cleaner:
            for topic in topics:
                with contextlib.suppress(Exception):
                    await cleaner.delete_topic(topic)

    async def enforce_retention(self, broker: Broker) -> None:
        """Raise the retention floors now."""
        await broker.enforce_retention()  # type: ignore[attr-defined]

    async def publish_raw(self, broker: Broker, topic: str, payload: bytes) -> None:
        """Produce the bytes as a record of the topic."""
        await broker.publish_raw(topic, payload)  # type: ignore[attr-defined]

    def worker_url(self, broker: Broker) -> str:
        """The private Tansu's URL with the harness's options."""
        return self._url + OPTIONS

    async def restart_service(self, broker: Broker) -> Broker:
        """SIGKILL the private Tansu and start it again; the broker reconnects by itself."""
        from tests.messaging.kafka_service import private_kafka

        await asyncio.to_thread(private_kafka().restart_tansu)
        return broker


def make_harness(_: Path) -> BrokerHarness:
    """The harness, on the private Tansu (started on first use)."""
    pytest.importorskip("confluent_kafka", exc_type=ModuleNotFoundError)
    pytest.importorskip("moto", exc_type=ModuleNotFoundError)
    from tests.messaging.kafka_service import private_kafka

    return KafkaBrokerHarness(private_kafka().url)
