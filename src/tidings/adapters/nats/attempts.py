"""Exact attempt counts although members prefetch: a ledger of deliveries never handed out.

JetStream counts a delivery when it sends a message to a pull request. A member pulls ahead
(up to ``prefetch``), so when it closes or gives a partition away, the messages it buffered
but never handed to its caller were counted although nobody saw them. The member nacks them
and records each one here; the next member to deliver such a message subtracts what the
ledger says from ``num_delivered``.

The ledger is one message per (group, partition) in the stream ``tidings_attempts``
(subject ``tidings.attempts.<topic>.<group>.<partition>``, the latest message kept): a JSON
object from stream sequence to the count of unseen deliveries. It is written by the member
that held the partition, before it gives the lease back, and read by the member that takes
the lease next, so the two never race. Entries below the group's ack floor are dropped
whenever it is written; a replay clears it; deleting the topic purges it; the stream forgets a
ledger not written for 7 days. A member killed outright writes nothing: its buffered messages
then count as attempts, as on every backend.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Final, cast

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api

from tidings.adapters.nats.naming import GroupNames

__all__ = ["ATTEMPTS_STREAM", "AttemptLedger", "ensure_attempts_stream", "forget_topic"]

ATTEMPTS_STREAM: Final = "tidings_attempts"
_SUBJECTS: Final = "tidings.attempts.>"
_KEEP_FOR: Final = 7 * 24 * 3600.0
log: Final = logging.getLogger("tidings.nats")


async def ensure_attempts_stream(nc: Client) -> None:
    """Create the ledger's stream unless it exists."""
    jsm = nc.jsm()
    try:
        await jsm.stream_info(ATTEMPTS_STREAM)
    except nats.js.errors.NotFoundError:
        await jsm.add_stream(
            name=ATTEMPTS_STREAM,
            subjects=[_SUBJECTS],
            storage=api.StorageType.FILE,
            max_msgs_per_subject=1,
            max_age=_KEEP_FOR,
            discard=api.DiscardPolicy.OLD,
        )


async def forget_topic(nc: Client, token: str) -> None:
    """Purge the ledgers of every group of a topic (the topic was deleted)."""
    await nc.jsm().purge_stream(ATTEMPTS_STREAM, subject=f"tidings.attempts.{token}.>")


class AttemptLedger:
    """Unseen deliveries of one group's partition: stream sequence -> count."""

    def __init__(self, nc: Client, group: GroupNames, partition: int) -> None:
        self._nc = nc
        self._group = group
        self._partition = partition
        self._subject = f"tidings.attempts.{group.topic.token}.{group.consumer}.{partition}"
        self._unseen: dict[int, int] = {}

    def attempt(self, seq: int, num_delivered: int) -> int:
        """Return the attempt of a delivery: the server's count less the unseen ones."""
        if num_delivered == 1 or not self._unseen:
            return num_delivered
        return max(1, num_delivered - self._unseen.get(seq, 0))

    async def load(self) -> None:
        """Read the ledger (when taking the partition)."""
        try:
            stored = await self._nc.jsm().get_last_msg(ATTEMPTS_STREAM, self._subject)
        except nats.js.errors.NotFoundError:
            self._unseen = {}
            return
        raw = cast(dict[str, int], json.loads(stored.data or b"{}"))
        self._unseen = {int(seq): int(count) for seq, count in raw.items()}

    async def record(self, seqs: Iterable[int]) -> None:
        """Count one more unseen delivery of each sequence, and store the ledger."""
        seqs = list(seqs)
        if not seqs:
            return
        for seq in seqs:
            self._unseen[seq] = self._unseen.get(seq, 0) + 1
        try:
            floor = await self._ack_floor()
            self._unseen = {seq: n for seq, n in self._unseen.items() if seq > floor}
            body = json.dumps({str(seq): n for seq, n in sorted(self._unseen.items())})
            await self._nc.jetstream().publish(self._subject, body.encode())
        except (nats.errors.Error, OSError) as exc:
            log.warning("could not record unseen deliveries of %s: %r", self._subject, exc)

    def forget(self) -> None:
        """Forget what was loaded (the consumer was recreated; `clear` stores that)."""
        self._unseen = {}

    async def clear(self) -> None:
        """Forget everything (the group's consumer was recreated)."""
        self._unseen = {}
        await self._nc.jetstream().publish(self._subject, b"{}")

    async def _ack_floor(self) -> int:
        stream = self._group.topic.stream(self._partition)
        info = await self._nc.jsm().consumer_info(stream, self._group.consumer)
        return info.ack_floor.stream_seq if info.ack_floor is not None else 0
