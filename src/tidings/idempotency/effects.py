"""Effects outside the transaction (an SMS, a payment call): pending -> sending -> sent.

An effect that cannot join a database transaction cannot be made exactly-once by the inbox.
`Effects` runs it through a small state machine kept in a `DedupStore`, and hands the
provider an idempotency key derived from the effect's key, the same on every attempt::

    effects = Effects(store, consumer="notifications")
    outcome = await effects.run(f"sms:{order_id}", lambda key: sms.send(phone, text, key=key))

The states, per effect key::

    PENDING --claim--> SENDING --succeed--> SENT   (final)
       ^                  |
       +-----fail---------+   (the call raised: release the claim, a retry may send)
       +-----expire-------+   (the worker died mid-send: the lease runs out)

PENDING is "no live record", SENDING a claim with a lease, SENT a done key. A worker that
dies while SENDING leaves the claim to expire; the next attempt sends again *with the same
provider key*, so a provider that honours idempotency keys answers with the first result
and sends nothing. Without provider keys the window is that one crash between the provider's
send and the record of SENT. Two workers never send at once: the second waits (BUSY) until
the first records SENT, releases, or its lease expires.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from tidings.idempotency.ports import DEFAULT_LEASE, DEFAULT_TTL, Claim, DedupStore, inbox_key

__all__ = ["EffectOutcome", "EffectState", "Effects", "Step", "advance", "provider_key"]

T = TypeVar("T")
_NAMESPACE: Final = uuid.UUID("0c6b5c1e-6d43-4f0e-9a57-6f3d2b1c9e11")


class EffectState(enum.Enum):
    """Where one effect is."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"


class Step(enum.Enum):
    """What happens to an effect."""

    CLAIM = "claim"
    SUCCEED = "succeed"
    FAIL = "fail"
    EXPIRE = "expire"


_TRANSITIONS: Final[dict[tuple[EffectState, Step], EffectState]] = {
    (EffectState.PENDING, Step.CLAIM): EffectState.SENDING,
    (EffectState.SENDING, Step.SUCCEED): EffectState.SENT,
    (EffectState.SENDING, Step.FAIL): EffectState.PENDING,
    (EffectState.SENDING, Step.EXPIRE): EffectState.PENDING,
}


def advance(state: EffectState, step: Step) -> EffectState:
    """Return the state after ``step``; raise ValueError for a step the state does not allow."""
    try:
        return _TRANSITIONS[(state, step)]
    except KeyError:
        raise ValueError(f"an effect cannot {step.value} when {state.value}") from None


def provider_key(key: str) -> str:
    """Return the idempotency key to give the provider for an effect key (a stable UUID)."""
    return str(uuid.uuid5(_NAMESPACE, key))


@dataclass(frozen=True, slots=True)
class EffectOutcome(Generic[T]):
    """What `Effects.run` did.

    Attributes:
        performed: True when this call ran the effect; False when it was SENT already.
        value: What the effect returned (None when not performed).
        provider_key: The idempotency key the provider got (or would have got).
    """

    performed: bool
    value: T | None
    provider_key: str


class Effects:
    """Runs effects at most once per key (exactly once with a provider honouring keys).

    Args:
        store: Where the states live (any `DedupStore`; an inbox works too).
        consumer: Prefixes every key, so consumers sharing a store stay apart.
        lease: How long SENDING holds a key: longer than the provider call may take.
        ttl: How long SENT is remembered (None: forever).
        poll: How often a BUSY key is tried again, in seconds.
        on_state: Called with the key and each state it enters (logs, metrics, tests).
    """

    def __init__(
        self,
        store: DedupStore,
        *,
        consumer: str,
        lease: float = DEFAULT_LEASE,
        ttl: float | None = DEFAULT_TTL,
        poll: float = 0.5,
        on_state: Callable[[str, EffectState], object] | None = None,
    ) -> None:
        self.store = store
        self.consumer = consumer
        self.lease = lease
        self.ttl = ttl
        self.poll = poll
        self._on_state = on_state

    async def run(
        self,
        key: str,
        effect: Callable[[str], Awaitable[T]],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> EffectOutcome[T]:
        """Run ``effect(provider_key)`` unless the key is SENT; wait while it is SENDING.

        ``sleep`` waits between tries of a BUSY key (pass `Context.sleep` in a handler, so
        the wait gives its concurrency slot back). What ``effect`` raises is raised, after the
        claim is released.
        """
        stored = inbox_key(self.consumer, key)
        given = provider_key(stored)
        owner = uuid.uuid4().hex
        while (found := await self.store.claim(stored, owner, lease=self.lease)) is Claim.BUSY:
            await sleep(self.poll)
        if found is Claim.DONE:
            return EffectOutcome(False, None, given)
        return EffectOutcome(True, await self._send(stored, owner, given, effect), given)

    async def _send(
        self, stored: str, owner: str, given: str, effect: Callable[[str], Awaitable[T]]
    ) -> T:
        self._enter(stored, advance(EffectState.PENDING, Step.CLAIM))
        try:
            value = await effect(given)
        except BaseException:
            await asyncio.shield(self.store.release(stored, owner))
            self._enter(stored, advance(EffectState.SENDING, Step.FAIL))
            raise
        await self.store.record(stored, ttl=self.ttl)
        self._enter(stored, advance(EffectState.SENDING, Step.SUCCEED))
        return value

    def _enter(self, key: str, state: EffectState) -> None:
        if self._on_state is not None:
            self._on_state(key, state)
