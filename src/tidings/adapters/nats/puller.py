"""Pulling one partition's consumer continuously, within a credit of unsettled deliveries.

A puller keeps pull requests (``$JS.API.CONSUMER.MSG.NEXT``) outstanding on its own inbox so
that messages flow without a round trip per batch, as nats.go's ``Consume`` does: it asks for
more whenever the messages requested but not received, plus those received but not settled,
fall below half its quota. Requests expire after a second; a request lost with the connection
or the consumer (a replay recreates it) is written off after its expiry, and `reset` writes off
all of them at once after a reconnect.

JetStream cannot cancel a pull request, and it keeps sending to a request whose inbox nobody
listens to any more (each such message then waits out the ack deadline). So `stop` keeps the
inbox until every outstanding request has ended, handing what still arrives to ``on_late``
(which nacks it) instead of ``on_message``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Final

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tidings.adapters.nats.connection import wait_event

__all__ = ["Puller"]

_EXPIRES: Final = 1.0
_GRACE: Final = 0.5
_STATUS: Final = "Status"
_PENDING: Final = "Nats-Pending-Messages"
_BACKOFF: Final = 0.25


class Puller:
    """Pulls one partition stream's consumer into ``on_message``."""

    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        *,
        on_message: Callable[[Msg], None],
        on_late: Callable[[Msg], None],
        quota: Callable[[], int],
    ) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._on_message = on_message
        self._on_late = on_late
        self._stopping = False
        self._quota = quota
        self._inbox = nc.new_inbox()
        self._pending = 0  # requested, not received
        self.held = 0  # received, not settled
        self._deadline = 0.0
        self._resume_at = 0.0
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe to the inbox and start pulling."""
        self._sub = await self._nc.subscribe(self._inbox, cb=self._receive)
        self._task = asyncio.create_task(self._run(), name=f"tidings-nats-pull:{self._next}")

    def halt(self) -> None:
        """Hand what arrives from now on to ``on_late``; ask for nothing more."""
        self._stopping = True
        self._wake.set()

    async def stop(self) -> None:
        """Stop pulling; wait until the requests already sent have ended (see above)."""
        self.halt()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._pending and time.monotonic() < self._deadline:
            self._wake.clear()
            await wait_event(self._wake, self._deadline - time.monotonic())
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    @property
    def running(self) -> bool:
        """Whether the puller still hands messages on."""
        return not self._stopping

    def release(self) -> None:
        """One message it handed on was settled: it may ask for another."""
        self.held = max(0, self.held - 1)
        self._wake.set()

    def reset(self) -> None:
        """Write off every outstanding request (the connection was re-established)."""
        self._pending = 0
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._maybe_request()
            self._wake.clear()
            await wait_event(self._wake, self._timeout())
            if self._pending and time.monotonic() > self._deadline:
                self._pending = 0  # the request died without a word (consumer gone, say)

    def _timeout(self) -> float | None:
        now = time.monotonic()
        if now < self._resume_at:
            return self._resume_at - now
        if self._pending:
            return max(self._deadline - now, 0.01)
        return None

    async def _maybe_request(self) -> None:
        if self._stopping or time.monotonic() < self._resume_at:
            return
        quota = self._quota()
        free = quota - self._pending - self.held
        if free <= 0 or (self._pending and free < max(1, quota // 2)):
            return
        body = json.dumps({"batch": free, "expires": int(_EXPIRES * 1e9)}).encode()
        self._pending += free
        self._deadline = time.monotonic() + _EXPIRES + _GRACE
        try:
            await self._nc.publish(self._next, body, reply=self._inbox)
        except Exception:
            self._pending = max(0, self._pending - free)
            raise
        # Cancelled mid-publish, the request may have gone out: `stop` must wait for it.

    async def _receive(self, msg: Msg) -> None:
        headers = msg.headers
        if headers is not None and _STATUS in headers:
            self._status(headers)
            return
        self._pending = max(0, self._pending - 1)
        if self._stopping:
            self._wake.set()
            self._on_late(msg)
            return
        self.held += 1
        self._on_message(msg)

    def _status(self, headers: dict[str, str]) -> None:
        status = headers[_STATUS]
        if status == "100":
            return  # idle heartbeat
        left = headers.get(_PENDING)
        if status == "408" and left is not None:
            self._pending = max(0, self._pending - int(left))
        else:  # 409 consumer deleted, leadership change, limits...; 404/503: nothing there
            self._pending = 0
            if status != "408":
                self._resume_at = time.monotonic() + _BACKOFF
        self._wake.set()
