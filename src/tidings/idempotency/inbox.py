"""The inbox: the dedup record committed in the same transaction as the handler's effects.

A handler whose effects go to a SQL database writes them through the inbox's transaction; the
transaction also inserts the delivery's key, and the delivery is acked only after the commit::

    inbox = SQLiteInbox("sqlite:///shop.db")

    async def on_shipped(delivery: Delivery) -> None:
        try:
            async with inbox.transaction(delivery, consumer="shipping") as tx:
                tx.execute("INSERT INTO shipments ...", (...))
        except AlreadyProcessed:
            pass  # an earlier delivery committed; this one was acked

A crash anywhere gives one effect: before the commit there is neither the effect nor the key
(the broker redelivers and the handler runs again); after it there are both (the redelivery
finds the key, skips the block and is acked). `process` wraps that ``try``; under the router,
the ``dedupe`` middleware does it all and the handler gets the transaction from
`Inbox.current`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import Generic, Protocol, TypeVar, runtime_checkable

from tidings.idempotency.ports import DEFAULT_TTL, AlreadyProcessed, DedupStore
from tidings.messaging.ports import Delivery

__all__ = ["Inbox", "InboxBase", "InboxTx", "bound", "process"]


class InboxTx:
    """The common part of a backend's inbox transaction handle.

    Attributes:
        inbox: The inbox that opened it.
        key: The stored key (``consumer/key``) the commit records.
        outcome: Bytes stored with the key at commit (the ``dedupe`` middleware keeps the
            events the handler published there); a later duplicate gets them back in
            `AlreadyProcessed.outcome`.
    """

    def __init__(self, inbox: object, key: str) -> None:
        self.inbox = inbox
        self.key = key
        self.outcome: bytes | None = None


TxT = TypeVar("TxT", bound=InboxTx)
TxT_co = TypeVar("TxT_co", bound=InboxTx, covariant=True)

_current: ContextVar[InboxTx | None] = ContextVar("tidings_inbox_tx", default=None)


@runtime_checkable
class Inbox(DedupStore, Protocol[TxT_co]):
    """A dedup store in a SQL database whose records can join the effects' transaction.

    Contract, beyond `DedupStore`'s (checked by ``tidings.testing.conformance.dedup``):

    - `transaction` commits the block's writes and the key together, or neither.
    - Of concurrent transactions for one key, at most one commits; the others raise
      `AlreadyProcessed` and commit nothing (they may wait for the first to finish).
    - With ``ack=True`` the delivery is acked after the commit, and when the key was done
      already; never when the block raised.
    """

    def transaction(
        self,
        delivery: Delivery,
        *,
        consumer: str,
        key: str | None = None,
        ttl: float | None = DEFAULT_TTL,
        ack: bool = True,
    ) -> AbstractAsyncContextManager[TxT_co]:
        """Open a transaction recording ``consumer/key`` (``key`` defaults to the event id).

        Raises:
            AlreadyProcessed: the key is done, on entering (the block does not run) or, when
                a concurrent transaction committed it first, on leaving (nothing committed).
        """
        ...

    def current(self) -> TxT_co:
        """Return the transaction the ``dedupe`` middleware opened for the running handler.

        Raises:
            LookupError: no transaction of this inbox is open in this task.
        """
        ...


class InboxBase(Generic[TxT]):
    """`Inbox.current` for an adapter whose transactions are of class ``tx_class``."""

    tx_class: type[TxT]

    def current(self) -> TxT:
        """Return the transaction the ``dedupe`` middleware opened for the running handler."""
        tx = _current.get()
        if not isinstance(tx, self.tx_class) or tx.inbox is not self:
            raise LookupError(f"no transaction of {type(self).__name__} is open here")
        return tx


@contextlib.contextmanager
def bound(tx: InboxTx) -> Iterator[None]:
    """Make ``tx`` what `Inbox.current` returns in this task, for the ``with`` block."""
    token = _current.set(tx)
    try:
        yield
    finally:
        _current.reset(token)


async def process(
    inbox: Inbox[TxT],
    delivery: Delivery,
    work: Callable[[TxT], Awaitable[None]],
    *,
    consumer: str,
    key: str | None = None,
    ttl: float | None = DEFAULT_TTL,
) -> bool:
    """Run ``work(tx)`` in an inbox transaction, commit, then ack the delivery.

    Returns False when the key was done already (the delivery is acked, ``work`` did not run
    or its writes were dropped); raises what ``work`` raised (the delivery is not settled).
    """
    try:
        async with inbox.transaction(delivery, consumer=consumer, key=key, ttl=ttl) as tx:
            with bound(tx):
                await work(tx)
    except AlreadyProcessed:
        return False
    return True
