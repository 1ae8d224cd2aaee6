"""Collecting JetStream's publish acks for pipelined publishes, one wait per round.

A JetStream publish is a core NATS message with a reply subject; the server answers it on that
subject with a pub ack (``{"stream": ..., "seq": N, "duplicate": true}``) or an API error once
the message is stored, or with a 503 status when no stream listens. `AckInbox` subscribes
once, for the connection's lifetime, to ``<inbox>.*.*`` and gives each publish of a *round*
(the messages one `Publisher` attempt sends) the reply subject ``<inbox>.<round>.<index>``:
the answer says by its subject which message of which round it acknowledges, so no future,
token or semaphore is made per message (nats-py's ``publish_async`` makes all three and reads
each ack with ``json`` into a dataclass; here msgspec reads it) and one future per round wakes
the sender when every message has its answer.

Answers to a round that ended (it timed out and its messages were resent in a new round) find
no round and are dropped.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Final

import msgspec
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["AckInbox", "Answer", "Round", "StoredAck"]

_STATUS: Final = "Status"
_NO_RESPONDERS: Final = "503"


class StoredAck(msgspec.Struct, frozen=True):
    """JetStream's answer to a stored publish: the stream sequence, and whether it was a repeat."""

    seq: int
    duplicate: bool = False


class _Reply(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    error: dict[str, object] | None = None


_decode_reply: Final = msgspec.json.Decoder(_Reply).decode

Answer = StoredAck | Exception
"""What came back for one message: its ack, or the error the server (or its absence) gave."""


class Round:
    """The answers to one batch of publishes, by index; ``done`` when each index has one."""

    __slots__ = ("_expected", "answers", "done", "reply_prefix")

    def __init__(self, reply_prefix: str, expected: int) -> None:
        self.reply_prefix = reply_prefix
        self.answers: dict[int, Answer] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._expected = expected

    def reply_to(self, index: int) -> str:
        """Return the reply subject for the message at ``index``."""
        return f"{self.reply_prefix}{index}"

    def expect(self, expected: int) -> None:
        """Say how many answers complete the round (fewer than announced when sending stopped)."""
        self._expected = expected
        self._check()

    def answer(self, index: int, answer: Answer) -> None:
        """Record the answer for one index (the first one counts)."""
        if index not in self.answers:
            self.answers[index] = answer
            self._check()

    def _check(self) -> None:
        if len(self.answers) >= self._expected and not self.done.done():
            self.done.set_result(None)


class AckInbox:
    """The one subscription receiving the acks of a connection's pipelined publishes."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._rounds: dict[str, Round] = {}
        self._numbers = itertools.count()
        self._subscription: Subscription | None = None

    async def open(self) -> None:
        """Subscribe to the inbox (once; later calls do nothing)."""
        if self._subscription is None:
            self._subscription = await self._nc.subscribe(f"{self._prefix}.*.*", cb=self._on_reply)

    def begin(self, expected: int) -> Round:
        """Start a round of ``expected`` publishes; `end` it when done waiting."""
        name = str(next(self._numbers))
        round_ = Round(f"{self._prefix}.{name}.", expected)
        self._rounds[name] = round_
        return round_

    def end(self, round_: Round) -> None:
        """Forget a round: answers still on their way to it are dropped."""
        name = round_.reply_prefix[len(self._prefix) + 1 : -1]
        self._rounds.pop(name, None)

    async def _on_reply(self, msg: Msg) -> None:
        name, _, index = msg.subject[len(self._prefix) + 1 :].rpartition(".")
        round_ = self._rounds.get(name)
        if round_ is not None and index.isdigit():
            round_.answer(int(index), _answer(msg))


def _answer(msg: Msg) -> Answer:
    if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
        return nats.js.errors.NoStreamResponseError()
    try:
        reply = _decode_reply(msg.data)
    except msgspec.DecodeError as exc:
        return nats.js.errors.Error(f"unreadable publish ack: {exc}")
    if reply.error is not None:
        return _api_error(reply.error)
    return StoredAck(reply.seq, reply.duplicate)


def _api_error(error: dict[str, object]) -> Exception:
    try:
        nats.js.errors.APIError.from_error(error)  # raises the error matching the code
    except nats.js.errors.APIError as exc:
        return exc
    except (KeyError, TypeError) as exc:  # an error object without a usable code
        return nats.js.errors.Error(f"malformed publish error {error!r}: {exc}")
    return nats.js.errors.APIError(description=str(error))
