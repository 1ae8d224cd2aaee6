"""The deduplication store port: which keys were processed, for how long to remember them.

Words (docs/idempotency.md): a *key* names one effect a consumer must produce once; by
default it is the consumer's name and the event id (``billing/0190f...``), or one the user
derives from the payload (``billing/order-17:sku-4``). A key is *done* once its effect was
produced, and *claimed* while one worker is producing it (a lease, so that a worker that dies
does not hold the key forever). Both expire: a done key after its time to live (longer than
the broker can redeliver or replay), a claim after its lease.

The port's contract, the same on every backend (``tidings.testing.conformance.dedup``):

- `DedupStore.claim` and `DedupStore.record` are atomic across tasks and processes: of many
  concurrent claims of one free key exactly one is `Claim.ACQUIRED`; of many concurrent
  records of one key exactly one returns True.
- An expired key counts as absent everywhere: it may be claimed or recorded again, `seen`
  says False, and `purge` deletes it.
- `release` frees only a claim that the same owner holds, never a done key.
- Every method raises `ClosedError` after ``aclose()``, which is idempotent; driver errors
  are raised as `BackendError`.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Final, Protocol, runtime_checkable

from tidings.errors import TidingsError

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_TTL",
    "AlreadyProcessed",
    "Claim",
    "DedupStore",
    "inbox_key",
    "ttl_seconds",
]

DEFAULT_TTL: Final = timedelta(days=7).total_seconds()
"""How long a done key is remembered by default (seconds): longer than any replay window."""

DEFAULT_LEASE: Final = 120.0
"""How long a claim holds a key by default (seconds): longer than a handler may run."""


class Claim(enum.Enum):
    """What `DedupStore.claim` found."""

    ACQUIRED = "acquired"
    """The key was free (or expired): the caller holds it until it records or releases it."""
    BUSY = "busy"
    """Another owner holds an unexpired claim: try again later."""
    DONE = "done"
    """The key is done: the effect was produced, skip it."""


class AlreadyProcessed(TidingsError):
    """Raised by an inbox transaction whose key is done: nothing of the block was committed.

    Attributes:
        key: The inbox key.
        outcome: What the first, committed transaction stored with the key (the events its
            handler published, for the router to publish again), or None.
    """

    def __init__(self, key: str, outcome: bytes | None = None) -> None:
        super().__init__(f"{key!r} was already processed")
        self.key = key
        self.outcome = outcome


def inbox_key(consumer: str, key: str) -> str:
    """Return the stored key of one consumer's key: ``consumer/key``."""
    if not consumer:
        raise ValueError("the consumer name must not be empty")
    return f"{consumer}/{key}"


def ttl_seconds(ttl: float | timedelta | None) -> float | None:
    """Return a time to live in seconds (None: forever); it must be positive."""
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if seconds is not None and seconds <= 0:
        raise ValueError(f"a time to live must be > 0 seconds, got {seconds}")
    return seconds


@runtime_checkable
class DedupStore(Protocol):
    """Remembers processed keys for a time to live, with claims for the work in between.

    A consumer whose effect cannot join a database transaction uses it around the effect:
    `claim` (skip on DONE, wait on BUSY), produce the effect, then `record`; `release` when
    the effect failed, so that a redelivery tries again. See the module docstring for the
    contract.
    """

    async def claim(self, key: str, owner: str, *, lease: float = DEFAULT_LEASE) -> Claim:
        """Claim a free or expired key for ``owner`` for ``lease`` seconds.

        Returns ACQUIRED (the caller holds it now; claiming a key one already holds renews
        the lease), BUSY (another owner holds it) or DONE (it was recorded).
        """
        ...

    async def record(self, key: str, *, ttl: float | None = DEFAULT_TTL) -> bool:
        """Mark the key done for ``ttl`` seconds (None: forever), dropping any claim.

        Returns True when this call recorded it, False when it was done (and unexpired)
        already; the earlier record then keeps its expiry.
        """
        ...

    async def seen(self, key: str) -> bool:
        """Return True when the key is done and not expired."""
        ...

    async def release(self, key: str, owner: str) -> bool:
        """Drop ``owner``'s claim on the key; return False when it held none (done keys stay)."""
        ...

    async def purge(self, *, batch_size: int = 1000) -> int:
        """Delete every expired key, ``batch_size`` per transaction; return how many."""
        ...

    async def aclose(self) -> None:
        """Close connections; idempotent."""
        ...
