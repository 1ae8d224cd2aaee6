"""A delivery that is settled once: the shared half of every backend's `Delivery`.

A backend subclasses `SettleOnce` and implements `_ack`, `_nack`, `_reject_to_dead_letter` and
`_extend`. This class makes a second settlement a no-op, refuses settlement once the
subscription is closed, and builds the dead-letter headers so every backend writes the same
ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from tidings.errors import ClosedError
from tidings.events import Event
from tidings.messaging.ports import HEADER_ATTEMPTS, HEADER_ORIGIN, HEADER_REASON

__all__ = ["NO_HEADERS", "SettleOnce", "dead_letter_headers"]

NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})
"""The headers of a delivery that has none (one shared read-only empty mapping)."""


def dead_letter_headers(topic: str, reason: str, attempt: int) -> dict[str, str]:
    """Return the headers a dead-lettered event carries: why, after how many tries, from where."""
    return {HEADER_REASON: reason, HEADER_ATTEMPTS: str(attempt), HEADER_ORIGIN: topic}


class SettleOnce(ABC):
    """Common state of a delivery: its facts, whether it was settled, whether it may still be."""

    __slots__ = (
        "_attempt",
        "_event",
        "_headers",
        "_key",
        "_offset",
        "_partition",
        "_settled",
        "_topic",
    )

    def __init__(
        self,
        event: Event,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: str | None,
        attempt: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._event = event
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._attempt = attempt
        self._headers = NO_HEADERS if not headers else MappingProxyType(dict(headers))
        self._settled = False

    @property
    def event(self) -> Event:
        """The event delivered."""
        return self._event

    @property
    def topic(self) -> str:
        """The topic it was published to."""
        return self._topic

    @property
    def partition(self) -> int:
        """Its partition."""
        return self._partition

    @property
    def offset(self) -> int:
        """Its offset in the partition."""
        return self._offset

    @property
    def key(self) -> str | None:
        """The key it was published with."""
        return self._key

    @property
    def attempt(self) -> int:
        """Which delivery of this event to this group this is, from 1."""
        return self._attempt

    @property
    def headers(self) -> Mapping[str, str]:
        """Backend-neutral headers (read-only)."""
        return self._headers

    @property
    def settled(self) -> bool:
        """Whether ack, nack or reject was called."""
        return self._settled

    async def ack(self) -> None:
        """The event was handled: never deliver it to this group again."""
        if self._claim():
            await self._ack()

    async def nack(self, *, delay: float = 0.0) -> None:
        """The event was not handled: deliver it again after ``delay`` seconds."""
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        if self._claim():
            await self._nack(delay)

    async def reject(self, reason: str) -> None:
        """Give up: move the event to the dead-letter topic with the reason, then ack it."""
        if self._claim():
            headers = dead_letter_headers(self._topic, reason, self._attempt)
            await self._reject_to_dead_letter(headers)

    async def extend(self, seconds: float | None = None) -> None:
        """Ask for more time before the ack deadline (no-op once settled)."""
        if seconds is not None and seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        if not self._settled:
            self._check_open()
            await self._extend(seconds)

    def _claim(self) -> bool:
        if self._settled:
            return False
        self._check_open()
        self._settled = True
        return True

    def _check_open(self) -> None:
        if self._closed():
            raise ClosedError(f"subscription to {self._topic!r}")

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self._topic}[{self._partition}]@{self._offset}"
            f" attempt={self._attempt} type={self._event.type}>"
        )

    def _closed(self) -> bool:
        """Return True once the subscription that made this delivery is closed."""
        return False

    @abstractmethod
    async def _ack(self) -> None: ...

    @abstractmethod
    async def _nack(self, delay: float) -> None: ...

    @abstractmethod
    async def _reject_to_dead_letter(self, headers: dict[str, str]) -> None: ...

    @abstractmethod
    async def _extend(self, seconds: float | None) -> None: ...
