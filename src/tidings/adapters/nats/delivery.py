"""A JetStream message handed to a group member, settled through its ack reply subject.

- ``ack`` sends ``+ACK``; ``nack(delay)`` sends ``-NAK`` with the delay (NakWithDelay: the
  server redelivers after it); ``reject(reason)`` publishes the event to ``<topic>.dlq``, waits
  for that publish to be acknowledged, then sends ``+TERM`` (never redeliver);
- ``extend()`` sends ``+WPI`` (in progress), which restarts the consumer's full ack wait;
  ``extend(seconds)`` longer than the ack deadline keeps sending ``+WPI`` every half deadline
  until that time has passed or the delivery is settled;
- ``attempt`` is the server's delivery count (``num_delivered`` in the message metadata), less
  the deliveries no caller saw (see `tidings.adapters.nats.attempts`).

Acks are fire-and-forget publishes, as in every NATS client: one lost with the connection
means the event comes back after the ack deadline (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

import nats.errors
from nats.aio.msg import Msg

from tidings.adapters.nats.connection import translate_errors
from tidings.events import Event
from tidings.messaging.delivery import SettleOnce

__all__ = ["MemberLink", "NatsDelivery"]


class MemberLink(Protocol):
    """What a delivery needs from the member that handed it out."""

    @property
    def closed(self) -> bool:
        """Whether the member's subscription is closed."""

    @property
    def ack_deadline(self) -> float:
        """The group's ack deadline in seconds."""

    async def dead_letter(self, delivery: NatsDelivery, headers: dict[str, str]) -> None:
        """Publish the delivery's event to the dead-letter topic with the headers."""

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a settlement running in the background until it is done (closing waits)."""


class NatsDelivery(SettleOnce):
    """One delivery of a JetStream message (see the module docstring)."""

    __slots__ = ("_keepalive", "_member", "_msg", "_release")

    def __init__(
        self,
        event: Event,
        msg: Msg,
        member: MemberLink,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: str | None,
        attempt: int,
        headers: dict[str, str],
        release: Callable[[NatsDelivery], None],
    ) -> None:
        super().__init__(
            event,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            attempt=attempt,
            headers=headers,
        )
        self._msg = msg
        self._member = member
        self._release = release
        self._keepalive: asyncio.Task[None] | None = None

    def _closed(self) -> bool:
        return self._member.closed

    async def _ack(self) -> None:
        try:
            with translate_errors("ack"):
                await self._msg.ack()
        finally:
            self._done()

    async def _nack(self, delay: float) -> None:
        try:
            with translate_errors("nack"):
                await self._msg.nak(delay=delay or None)
        finally:
            self._done()

    async def _reject_to_dead_letter(self, headers: dict[str, str]) -> None:
        # Once started, the move completes even if the caller is cancelled: a half-done reject
        # would leave the event neither in the dead-letter topic nor free to come back.
        move = asyncio.ensure_future(self._move(headers))
        self._member.track(move)
        await asyncio.shield(move)

    async def _move(self, headers: dict[str, str]) -> None:
        try:
            await self._member.dead_letter(self, headers)
            with translate_errors("reject"):
                await self._msg.term()
        except BaseException:
            self._settled = False  # not moved: it may be rejected again, or comes back
            raise
        self._done()

    async def _extend(self, seconds: float | None) -> None:
        with translate_errors("extend"):
            await self._msg.in_progress()
        deadline = self._member.ack_deadline
        if seconds is not None and seconds > deadline and self._keepalive is None:
            self._keepalive = asyncio.create_task(self._keep_alive(seconds, deadline))

    async def _keep_alive(self, seconds: float, deadline: float) -> None:
        until = time.monotonic() + seconds - deadline
        with contextlib.suppress(nats.errors.Error, OSError):
            while not self.settled and time.monotonic() < until:
                await asyncio.sleep(deadline / 2)
                if not self.settled and not self._member.closed:
                    await self._msg.in_progress()

    def _done(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._release(self)

    def message(self) -> Msg:
        """Return the underlying nats-py message (for closing the subscription)."""
        return self._msg
