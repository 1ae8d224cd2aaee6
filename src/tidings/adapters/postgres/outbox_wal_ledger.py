"""What a tableless-outbox source has read from its slot and handed out: pure bookkeeping.

A peek decodes pgoutput records into whole committed transactions (`read_peek`). The
`TransactionLedger` hands them out (never splitting one), tracks which of their messages are
marked, and says how far the slot may move: past the leading transactions, in commit order,
whose messages were all marked; up to the WAL position the peek read to when nothing is left
out. A released transaction is handed out again, whole. No I/O here: the source runs the
queries and tells the ledger what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tidings.adapters.postgres.outbox_wal_payload import decode_payload_message
from tidings.cdc.pgoutput import Begin, Commit, Message, decode
from tidings.outbox.ports import OutboxMessage

__all__ = ["Peeked", "TransactionLedger", "WalTransaction", "read_peek"]

logger = logging.getLogger(__name__)

_DECODED = (b"B", b"C", b"M")


@dataclass(slots=True)
class WalTransaction:
    """One committed transaction as a source tracks it between fetch and mark.

    Attributes:
        end_lsn: The end of its commit record: the slot moves here once it is all marked.
        rows: How many decoded records it spans (to size the next peek).
        messages: How many outbox messages of the source's prefix it holds.
        unmarked: Positions of its messages handed out and not yet marked.
        released: Given back by the relay; it is handed out again.
    """

    end_lsn: int
    rows: int
    messages: int = 0
    unmarked: set[int] = field(default_factory=set)
    released: bool = False

    @property
    def done(self) -> bool:
        """Whether every message it had was marked (and it was not released)."""
        return not self.released and not self.unmarked


@dataclass(slots=True)
class Peeked:
    """What one peek decoded.

    Attributes:
        tip: The WAL position the peek read up to.
        complete: Whether it reached the tip (fewer rows came back than asked for).
        txns: Whole committed transactions, in commit order, each with its outbox messages.
    """

    tip: int
    complete: bool
    txns: list[tuple[WalTransaction, list[OutboxMessage]]]


def read_peek(
    tip: int, complete: bool, records: Iterable[bytes], *, prefix: str, slot: str
) -> Peeked:
    """Decode peeked pgoutput records into whole transactions and their messages of ``prefix``.

    A transaction cut off at the end of the records is left out (the next peek reads it
    whole); non-transactional messages and other prefixes are skipped.

    Raises:
        PgOutputError: a record, or an outbox message of ``prefix``, does not decode.
    """
    peeked = Peeked(tip, complete, [])
    txn: WalTransaction | None = None
    batch: list[OutboxMessage] = []
    for raw in records:
        if raw[:1] not in _DECODED:
            logger.warning("outbox slot %s: skipping a %r record", slot, raw[:1])
            continue
        record = decode(raw)
        if isinstance(record, Begin):
            txn, batch = WalTransaction(end_lsn=0, rows=1), []
        elif txn is None:
            continue  # a non-transactional message: not written by `add`
        elif isinstance(record, Message):
            txn.rows += 1
            if record.transactional and record.prefix == prefix:
                batch.append(decode_payload_message(record.content, record.lsn))
        elif isinstance(record, Commit):
            txn.rows += 1
            txn.end_lsn = record.end_lsn
            peeked.txns.append((txn, batch))
            txn, batch = None, []
    return peeked


class TransactionLedger:
    """The transactions a source handed out, and how far its slot may move (see the module).

    Not thread-safe; the source calls it under its own lock.
    """

    def __init__(self) -> None:
        self._txns: dict[int, WalTransaction] = {}
        self._txn_of: dict[int, int] = {}
        self._tip: int | None = None
        self._advanced = 0

    @property
    def rows_out(self) -> int:
        """Decoded records spanned by the transactions out (a peek must read past them)."""
        return sum(txn.rows for txn in self._txns.values())

    def take(self, peeked: Peeked, limit: int) -> list[OutboxMessage]:
        """Hand out the peeked transactions not out yet, whole, about ``limit`` messages."""
        taken: list[OutboxMessage] = []
        complete = peeked.complete
        for txn, messages in peeked.txns:
            known = self._txns.get(txn.end_lsn)
            if known is not None and not known.released:
                continue  # out with the relay, or marked and waiting for the slot to move
            if taken and len(taken) + len(messages) > limit:
                complete = False
                break
            txn.messages = len(messages)
            txn.unmarked = {message.position for message in messages}
            self._txns[txn.end_lsn] = txn
            self._txn_of.update(dict.fromkeys(txn.unmarked, txn.end_lsn))
            taken.extend(messages)
        self._tip = peeked.tip if complete else None
        return taken

    def mark(self, messages: Sequence[OutboxMessage]) -> None:
        """Record that these messages were published."""
        for message in messages:
            txn = self._txns.get(self._txn_of.pop(message.position, -1))
            if txn is not None:
                txn.unmarked.discard(message.position)

    def release(self, messages: Sequence[OutboxMessage]) -> None:
        """Give back the transactions these messages belong to, whole."""
        for message in messages:
            txn = self._txns.get(self._txn_of.pop(message.position, -1))
            if txn is not None:
                txn.released = True
                for position in txn.unmarked:
                    self._txn_of.pop(position, None)
                txn.unmarked.clear()
        self._tip = None

    def target(self) -> int | None:
        """Return where the slot may move now, or None when it is there already."""
        done = self._finished()
        target = done[-1] if done else 0
        if len(done) == len(self._txns) and self._tip is not None:
            target = max(target, self._tip)
        return target if target > self._advanced else None

    def advanced(self, target: int | None) -> bool:
        """Record that the slot moved to ``target`` (None: it did not need to move).

        Returns whether marked messages are now behind the slot (not only WAL with nothing
        for this source).
        """
        marked = False
        for end_lsn in self._finished():
            marked = marked or self._txns.pop(end_lsn).messages > 0
        if target is not None:
            self._advanced = max(self._advanced, target)
        return marked

    def forget(self) -> None:
        """Forget everything (a new session, or the slot was dropped)."""
        self._txns.clear()
        self._txn_of.clear()
        self._tip = None
        self._advanced = 0

    def _finished(self) -> list[int]:
        done: list[int] = []
        for end_lsn in sorted(self._txns):
            if not self._txns[end_lsn].done:
                break
            done.append(end_lsn)
        return done
