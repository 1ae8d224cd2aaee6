"""The thread that owns one member's Kafka consumer: joins the group, fetches, commits.

confluent-kafka's consumer is driven by one thread calling ``consume``; its rebalance callbacks
run inside that call. So a `Poller` thread makes every consumer call itself, and talks to the
member on the event loop in two ways:

- fetched messages go to `Hooks.received` with one ``call_soon_threadsafe`` per ``consume``
  batch, as confluent-kafka's own `Message` objects (no copy per message), tagged with the
  poller's *epoch* (bumped at every assignment and seek, so the member can drop messages
  fetched before a position changed);
- a rebalance asks the loop and waits for the answer (`Hooks.revoked` returns the offsets to
  commit before the partitions go; `Hooks.assigned` returns where to resume each partition);
- the loop sends commands (commit, seek, stop) through a queue the thread serves between
  fetches, each with a future the loop can await.

The thread stops fetching while the member's buffer is full (`room`). A short spell (under
``_GRACE`` seconds, the common case for a busy consumer) it just waits; a longer one pauses its
partitions (librdkafka then drops what it prefetched and refetches it from the last message
handed over once they resume) and calls ``consume`` again so rebalances are answered. Every message
``consume`` or ``poll`` returns is handed to the member, full or not: one dropped message is a
gap the group's watermark would pass. It leaves the group on ``stop`` after a last synchronous
commit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Protocol

from confluent_kafka import (
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from tidings.adapters.kafka.clients import error_from

__all__ = ["Hooks", "Poller"]

_BATCH: Final = 500
_WAIT: Final = 0.05
_ANSWER_SECONDS: Final = 30.0
_GRACE: Final = 1.0
"""Seconds the member may stay full before the poller pauses its partitions to poll again."""
_log: Final = logging.getLogger(__name__)


class Hooks(Protocol):
    """What the member on the loop answers to its poller."""

    def received(self, epoch: int, messages: list[Message]) -> None: ...
    def revoked(self, partitions: list[int]) -> Awaitable[dict[int, int]]: ...
    def assigned(self, epoch: int, partitions: list[int]) -> Awaitable[dict[int, int]]: ...
    def failed(self, error: Exception) -> None: ...


Command = tuple[str, Mapping[int, int], concurrent.futures.Future[None] | None]


class Poller(threading.Thread):
    """A daemon thread running one group member's consumer (see the module docstring)."""

    def __init__(
        self,
        config: dict[str, object],
        topic: str,
        hooks: Hooks,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(name=f"tidings-kafka-{topic}", daemon=True)
        self._config, self._topic, self._hooks, self._loop = config, topic, hooks, loop
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self.room = threading.Event()
        self.room.set()
        self.epoch = 0
        self._stopping = False
        self._paused: list[TopicPartition] = []
        self._full_since: float | None = None

    def command(self, kind: str, offsets: Mapping[int, int]) -> concurrent.futures.Future[None]:
        """Queue a command (``commit``, ``seek`` or ``stop``); the future resolves when done."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._commands.put((kind, dict(offsets), done))
        return done

    def run(self) -> None:
        try:
            consumer = Consumer(self._config)
        except KafkaException as exc:
            self._fail(exc)
            return
        try:
            consumer.subscribe(
                [self._topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self._serve(consumer):
                self._fetch(consumer)
        except Exception as exc:  # reported to the member; the thread ends
            self._fail(exc)
        finally:
            self._stopping = True
            try:
                consumer.close()
            except Exception:  # closing a broken consumer: nothing is left to do
                _log.debug("closing the consumer of %r failed", self._topic, exc_info=True)

    def _fetch(self, consumer: Consumer) -> None:
        if self.room.is_set():
            self._full_since = None
            self._resume(consumer)
            self._hand_over(consumer.consume(_BATCH, _WAIT))
            return
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        if now - self._full_since < _GRACE:
            self.room.wait(_WAIT)  # nothing consumed, so nothing can be dropped
            return
        self._pause(consumer)
        messages = consumer.consume(_BATCH, 0)  # answers rebalances; paused: nothing new
        self._hand_over(messages)
        if not messages:
            self.room.wait(_WAIT)

    def _pause(self, consumer: Consumer) -> None:
        """Stop fetching the assigned partitions while the member is full."""
        if not self._paused:
            self._paused = consumer.assignment()
            if self._paused:
                consumer.pause(self._paused)

    def _resume(self, consumer: Consumer) -> None:
        if self._paused:
            paused, self._paused = self._paused, []
            consumer.resume(paused)

    def _hand_over(self, messages: list[Message]) -> None:
        """Send a batch's messages (errors left out) to the member in one loop callback."""
        good = [message for message in messages if message.error() is None]
        if len(good) < len(messages):
            for message in messages:
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    _log.debug("consumer of %r: %s", self._topic, error)
        if good:
            self._loop.call_soon_threadsafe(self._hooks.received, self.epoch, good)

    def _serve(self, consumer: Consumer) -> bool:
        """Run queued commands; return True once told to stop."""
        while True:
            try:
                kind, offsets, done = self._commands.get_nowait()
            except queue.Empty:
                return False
            try:
                stop = self._run(consumer, kind, offsets)
            except Exception as exc:
                if done is not None:
                    done.set_exception(error_from(exc, f"{kind} on {self._topic!r}"))
                continue
            if done is not None:
                done.set_result(None)
            if stop:
                return True

    def _run(self, consumer: Consumer, kind: str, offsets: Mapping[int, int]) -> bool:
        partitions = [TopicPartition(self._topic, p, o) for p, o in sorted(offsets.items())]
        if kind == "seek":
            self._resume(consumer)  # resuming would otherwise undo the seek
            self.epoch += 1
            for tp in partitions:
                consumer.seek(tp)
        if partitions and kind == "commit":
            consumer.commit(offsets=partitions, asynchronous=True)
        elif partitions:
            consumer.commit(offsets=partitions, asynchronous=False)
        if kind == "stop":
            self._stopping = True
        return kind == "stop"

    def _ask(self, call: Callable[[], Awaitable[dict[int, int]]]) -> dict[int, int] | None:
        async def asked() -> dict[int, int]:
            return await call()

        try:
            future = asyncio.run_coroutine_threadsafe(asked(), self._loop)
            return future.result(_ANSWER_SECONDS)
        except Exception as exc:  # the loop is gone or the member failed: do the default
            _log.debug("member of %r did not answer a rebalance: %r", self._topic, exc)
            return None

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._paused = []  # the next assignment starts unpaused
        if self._stopping:
            return
        numbers = [tp.partition for tp in partitions]
        offsets = self._ask(lambda: self._hooks.revoked(numbers)) or {}
        if offsets:
            try:
                consumer.commit(
                    offsets=[TopicPartition(self._topic, p, o) for p, o in offsets.items()],
                    asynchronous=False,
                )
            except KafkaException as exc:  # an older generation: the new holder rereads them
                _log.debug("commit on revoke of %r failed: %s", self._topic, exc)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._paused = []
        if not self._stopping:
            numbers = [tp.partition for tp in partitions]
            self._ask(lambda: self._hooks.revoked(numbers))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._paused = []
        if self._stopping:
            return
        self.epoch += 1
        epoch, numbers = self.epoch, [tp.partition for tp in partitions]
        starts = self._ask(lambda: self._hooks.assigned(epoch, numbers)) or {}
        consumer.assign(
            [TopicPartition(self._topic, p, starts.get(p, OFFSET_STORED)) for p in numbers]
        )

    def _fail(self, exc: Exception) -> None:
        error = error_from(exc, f"consume {self._topic!r}")
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._hooks.failed, error)
