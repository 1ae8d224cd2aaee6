"""What a backend gives the broker conformance suite: brokers, and ways to hurt them.

A harness makes fresh, opened brokers and declares in `Features` what it can do to them beyond
the port (reopen their storage, run a worker process against them, restart their service, put
raw bytes on a topic). The operations a backend supports are not declared here but by the
broker itself (`Broker.capabilities`); the suite runs every case whose operations the broker
claims, and skips the others, saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tidings.adapters.memory.broker import MemoryBroker
from tidings.messaging.ports import Broker, Capabilities

__all__ = ["BrokerHarness", "Features", "MemoryBrokerHarness"]


@dataclass(frozen=True, slots=True)
class Features:
    """What a harness can do to its brokers beyond the port (unclaimed cases are skipped).

    Attributes:
        publish_raw: `BrokerHarness.publish_raw` puts arbitrary bytes on a topic.
        reopen: `BrokerHarness.open_again` opens another broker over the same storage, so
            published events and group progress can be checked across a restart.
        cross_process: `BrokerHarness.worker_url` gives a URL that a worker process opens to
            join the same broker (the SIGKILL case).
        restart_service: `BrokerHarness.restart_service` restarts what the broker talks to.
        tick: Seconds the timing cases use as their unit (ack deadlines, nack delays); raise it
            for a backend whose timers are coarse.
    """

    publish_raw: bool = False
    reopen: bool = False
    cross_process: bool = False
    restart_service: bool = False
    tick: float = 0.3


class BrokerHarness(Protocol):
    """What a backend gives the suite. Subclass it explicitly.

    The optional methods raise `NotImplementedError` here; implement the ones `features`
    claims. Every method runs on the test's event loop.

    Attributes:
        name: The backend's name in results and in the capability table (``"sqlite"``).
        features: What the harness can do beyond the port.
    """

    name: str
    features: Features

    @property
    def capabilities(self) -> Capabilities:
        """The operations the backend's brokers declare."""
        ...

    async def make_broker(self) -> Broker:
        """Return a fresh, opened broker (its own storage, or a shared service)."""
        ...

    async def aclose(self) -> None:
        """Close every broker made and remove what they stored; idempotent."""
        ...

    async def enforce_retention(self, broker: Broker) -> None:
        """Make the broker apply its topics' retention now (or wait until it has)."""
        ...

    async def open_again(self, broker: Broker) -> Broker:
        """Return another opened broker over ``broker``'s storage (`Features.reopen`)."""
        raise NotImplementedError

    async def publish_raw(self, broker: Broker, topic: str, payload: bytes) -> None:
        """Put bytes on a topic as they are, bypassing encoding (`Features.publish_raw`)."""
        raise NotImplementedError

    def worker_url(self, broker: Broker) -> str:
        """Return the URL a worker process opens to reach ``broker`` (`Features.cross_process`)."""
        raise NotImplementedError

    async def restart_service(self, broker: Broker) -> Broker:
        """Restart the service behind ``broker``; return the broker to use from now on."""
        raise NotImplementedError


class MemoryBrokerHarness(BrokerHarness):
    """The harness of `MemoryBroker`: a new broker per test, raw bytes through its own door."""

    name = "memory"
    features = Features(publish_raw=True)

    def __init__(self) -> None:
        self._brokers: list[MemoryBroker] = []

    @property
    def capabilities(self) -> Capabilities:
        """`MemoryBroker.capabilities`."""
        return MemoryBroker.capabilities

    async def make_broker(self) -> Broker:
        """Return a new, opened `MemoryBroker`."""
        broker = MemoryBroker()
        self._brokers.append(broker)
        return await broker.open()

    async def aclose(self) -> None:
        """Close every broker made."""
        for broker in self._brokers:
            await broker.aclose()

    async def enforce_retention(self, broker: Broker) -> None:
        """Run the broker's retention job."""
        assert isinstance(broker, MemoryBroker)
        await broker.enforce_retention()

    async def publish_raw(self, broker: Broker, topic: str, payload: bytes) -> None:
        """Store the bytes as a message of the topic."""
        assert isinstance(broker, MemoryBroker)
        await broker.publish_raw(topic, payload)
