"""The dedup store and inbox conformance suites: what every backend must do, as tests.

An adapter runs them with a ``dedup_harness`` fixture (a `DedupHarness`) and subclasses::

    class TestMyDedupStore(DedupStoreConformance):
        pass


    class TestMyInbox(InboxConformance):  # backends with an inbox (`DedupHarness.inbox`)
        pass

Every test makes its own store (fresh storage) and its own keys. Expiry is tested with real
time: leases and times to live of a fraction of a second.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Protocol

import pytest

from tidings.adapters.memory.dedup import MemoryDedupStore
from tidings.errors import ClosedError
from tidings.events import Event
from tidings.idempotency import AlreadyProcessed, Claim, DedupStore, Inbox, InboxTx, process
from tidings.messaging.delivery import SettleOnce

__all__ = [
    "DedupHarness",
    "DedupStoreConformance",
    "FakeDelivery",
    "InboxConformance",
    "MemoryDedupHarness",
]

SHORT = 0.3
"""A lease or time to live that the tests wait out."""


class DedupHarness(Protocol):
    """Makes fresh stores (and inboxes) of one backend for the suites."""

    durable: bool
    """True when a store opened again on the same storage sees the first one's keys."""
    purge_counts: bool
    """True when `DedupStore.purge` deletes (and counts) expired keys; False when the
    backend expires them by itself (Redis) and purge returns 0."""

    async def make(self) -> DedupStore:
        """Return a new, opened store on fresh storage."""
        ...

    async def reopen(self, store: DedupStore) -> DedupStore:
        """Return another opened store on ``store``'s storage (durable backends)."""
        ...

    async def inbox(self) -> Inbox[Any]:
        """Return a new, opened inbox on fresh storage, with an ``effects`` table (or skip)."""
        ...

    def write_effect(self, tx: InboxTx, name: str) -> Any:
        """Write a row ``name`` into the effects table through ``tx`` (may return an awaitable)."""
        ...

    async def effects(self, inbox: Inbox[Any]) -> list[str]:
        """Return the committed rows of the effects table."""
        ...

    async def aclose(self) -> None:
        """Close everything made and remove its storage."""
        ...


class MemoryDedupHarness:
    """`MemoryDedupStore`, fresh per store; not durable, no inbox."""

    durable = False
    purge_counts = True

    def __init__(self) -> None:
        self._made: list[DedupStore] = []

    async def make(self) -> DedupStore:
        store = await MemoryDedupStore().open()
        self._made.append(store)
        return store

    async def reopen(self, store: DedupStore) -> DedupStore:
        raise NotImplementedError("memory stores are not durable")

    async def inbox(self) -> Inbox[Any]:
        pytest.skip("the memory backend has no transactions, hence no inbox")

    def write_effect(self, tx: InboxTx, name: str) -> Any:
        raise NotImplementedError

    async def effects(self, inbox: Inbox[Any]) -> list[str]:
        raise NotImplementedError

    async def aclose(self) -> None:
        for store in self._made:
            await store.aclose()


class FakeDelivery(SettleOnce):
    """A delivery that only counts how it was settled (for inbox tests without a broker)."""

    def __init__(self, event: Event | None = None, *, attempt: int = 1) -> None:
        event = event or Event(type="test.happened", source="/conformance", data={})
        super().__init__(event, topic="t", partition=0, offset=0, key=None, attempt=attempt)
        self.acks = 0

    async def _ack(self) -> None:
        self.acks += 1

    async def _nack(self, delay: float) -> None:
        """Not used by the inbox."""

    async def _reject_to_dead_letter(self, headers: dict[str, str]) -> None:
        """Not used by the inbox."""

    async def _extend(self, seconds: float | None) -> None:
        """Not used by the inbox."""


def _key() -> str:
    return f"k-{uuid.uuid4().hex[:12]}"


def _owner() -> str:
    return uuid.uuid4().hex


class DedupStoreConformance:
    """Every dedup store behaviour; subclass it with a ``dedup_harness`` fixture."""

    async def test_claim_of_a_free_key_is_acquired(self, dedup_harness: DedupHarness) -> None:
        store = await dedup_harness.make()
        assert await store.claim(_key(), _owner()) is Claim.ACQUIRED

    async def test_claim_by_another_owner_is_busy(self, dedup_harness: DedupHarness) -> None:
        store, key = await dedup_harness.make(), _key()
        await store.claim(key, _owner())
        assert await store.claim(key, _owner()) is Claim.BUSY

    async def test_claim_by_the_same_owner_renews(self, dedup_harness: DedupHarness) -> None:
        store, key, owner = await dedup_harness.make(), _key(), _owner()
        await store.claim(key, owner, lease=SHORT)
        assert await store.claim(key, owner, lease=60) is Claim.ACQUIRED
        await asyncio.sleep(SHORT * 1.5)
        assert await store.claim(key, _owner()) is Claim.BUSY

    async def test_claim_of_a_recorded_key_is_done(self, dedup_harness: DedupHarness) -> None:
        store, key = await dedup_harness.make(), _key()
        await store.record(key)
        assert await store.claim(key, _owner()) is Claim.DONE

    async def test_claim_after_the_lease_expired_is_acquired(
        self, dedup_harness: DedupHarness
    ) -> None:
        store, key = await dedup_harness.make(), _key()
        await store.claim(key, _owner(), lease=SHORT)
        await asyncio.sleep(SHORT * 1.5)
        assert await store.claim(key, _owner()) is Claim.ACQUIRED

    async def test_record_returns_true_once(self, dedup_harness: DedupHarness) -> None:
        store, key = await dedup_harness.make(), _key()
        assert await store.record(key) is True
        assert await store.record(key) is False

    async def test_record_over_a_claim_makes_it_done(self, dedup_harness: DedupHarness) -> None:
        store, key = await dedup_harness.make(), _key()
        await store.claim(key, _owner())
        assert await store.record(key) is True
        assert await store.seen(key)

    async def test_record_after_the_ttl_expired_returns_true(
        self, dedup_harness: DedupHarness
    ) -> None:
        store, key = await dedup_harness.make(), _key()
        await store.record(key, ttl=SHORT)
        await asyncio.sleep(SHORT * 1.5)
        assert await store.record(key) is True

    async def test_seen_only_for_live_recorded_keys(self, dedup_harness: DedupHarness) -> None:
        store, claimed, recorded, expiring = await dedup_harness.make(), _key(), _key(), _key()
        await store.claim(claimed, _owner())
        await store.record(recorded)
        await store.record(expiring, ttl=SHORT)
        assert [await store.seen(k) for k in (_key(), claimed, recorded, expiring)] == [
            False,
            False,
            True,
            True,
        ]
        await asyncio.sleep(SHORT * 1.5)
        assert await store.seen(expiring) is False

    async def test_release_frees_the_owners_claim(self, dedup_harness: DedupHarness) -> None:
        store, key, owner = await dedup_harness.make(), _key(), _owner()
        await store.claim(key, owner)
        assert await store.release(key, owner) is True
        assert await store.claim(key, _owner()) is Claim.ACQUIRED

    async def test_release_by_another_owner_keeps_the_claim(
        self, dedup_harness: DedupHarness
    ) -> None:
        store, key = await dedup_harness.make(), _key()
        await store.claim(key, _owner())
        assert await store.release(key, _owner()) is False
        assert await store.claim(key, _owner()) is Claim.BUSY

    async def test_release_keeps_a_recorded_key(self, dedup_harness: DedupHarness) -> None:
        store, key, owner = await dedup_harness.make(), _key(), _owner()
        await store.claim(key, owner)
        await store.record(key)
        assert await store.release(key, owner) is False
        assert await store.seen(key)

    async def test_purge_removes_expired_keys_only(self, dedup_harness: DedupHarness) -> None:
        store = await dedup_harness.make()
        expiring, kept = [_key() for _ in range(5)], [_key(), _key()]
        for key in expiring:
            await store.record(key, ttl=SHORT)
        await store.record(kept[0], ttl=None)
        await store.record(kept[1], ttl=60)
        await asyncio.sleep(SHORT * 1.5)
        purged = await store.purge(batch_size=2)
        assert purged == (5 if dedup_harness.purge_counts else 0)
        assert [await store.seen(k) for k in kept] == [True, True]
        assert await store.purge() == 0

    async def test_concurrent_claims_acquire_once(self, dedup_harness: DedupHarness) -> None:
        store, key = await dedup_harness.make(), _key()
        found = await asyncio.gather(*(store.claim(key, _owner()) for _ in range(20)))
        assert found.count(Claim.ACQUIRED) == 1
        assert found.count(Claim.BUSY) == 19

    async def test_concurrent_records_return_true_once(self, dedup_harness: DedupHarness) -> None:
        store, key = await dedup_harness.make(), _key()
        found = await asyncio.gather(*(store.record(key) for _ in range(20)))
        assert found.count(True) == 1

    async def test_ttl_must_be_positive(self, dedup_harness: DedupHarness) -> None:
        store = await dedup_harness.make()
        with pytest.raises(ValueError, match="time to live"):
            await store.record(_key(), ttl=0)

    async def test_methods_raise_closed_error_after_aclose(
        self, dedup_harness: DedupHarness
    ) -> None:
        store = await dedup_harness.make()
        await store.aclose()
        await store.aclose()
        with pytest.raises(ClosedError):
            await store.seen(_key())

    async def test_records_survive_reopening(self, dedup_harness: DedupHarness) -> None:
        if not dedup_harness.durable:
            pytest.skip("the backend is not durable")
        store, key = await dedup_harness.make(), _key()
        await store.record(key)
        again = await dedup_harness.reopen(store)
        assert await again.record(key) is False


async def _written(harness: DedupHarness, tx: InboxTx, name: str) -> None:
    result = harness.write_effect(tx, name)
    if asyncio.iscoroutine(result):
        await result


class InboxConformance:
    """Every inbox behaviour; the harness's `DedupHarness.inbox` makes the inboxes."""

    async def test_commit_writes_effect_and_key_then_acks(
        self, dedup_harness: DedupHarness
    ) -> None:
        inbox, delivery = await dedup_harness.inbox(), FakeDelivery()
        async with inbox.transaction(delivery, consumer="c") as tx:
            await _written(dedup_harness, tx, "one")
            assert delivery.acks == 0
        assert delivery.acks == 1
        assert await dedup_harness.effects(inbox) == ["one"]
        assert await inbox.seen(f"c/{delivery.event.id}")

    async def test_done_key_raises_already_processed_and_acks(
        self, dedup_harness: DedupHarness
    ) -> None:
        inbox, event = await dedup_harness.inbox(), FakeDelivery().event
        async with inbox.transaction(FakeDelivery(event), consumer="c") as tx:
            await _written(dedup_harness, tx, "first")
        for attempt in (2, 1):  # redelivered, then replayed (attempts count from 1 again)
            again = FakeDelivery(event, attempt=attempt)
            with pytest.raises(AlreadyProcessed):
                async with inbox.transaction(again, consumer="c") as tx:
                    await _written(dedup_harness, tx, "again")
            assert again.acks == 1
        assert await dedup_harness.effects(inbox) == ["first"]

    async def test_failed_block_commits_nothing_and_does_not_ack(
        self, dedup_harness: DedupHarness
    ) -> None:
        inbox, delivery = await dedup_harness.inbox(), FakeDelivery()

        async def failing() -> None:
            async with inbox.transaction(delivery, consumer="c") as tx:
                await _written(dedup_harness, tx, "lost")
                raise RuntimeError("handler failed")

        with pytest.raises(RuntimeError):
            await failing()
        assert (delivery.acks, await dedup_harness.effects(inbox)) == (0, [])
        assert await process(inbox, FakeDelivery(delivery.event), _noop, consumer="c")

    async def test_concurrent_transactions_of_one_key_commit_once(
        self, dedup_harness: DedupHarness
    ) -> None:
        inbox, event = await dedup_harness.inbox(), FakeDelivery().event

        async def work(tx: InboxTx) -> None:
            await _written(dedup_harness, tx, "effect")
            await asyncio.sleep(0.01)

        ran = await asyncio.gather(
            *(process(inbox, FakeDelivery(event), work, consumer="c") for _ in range(8))
        )
        assert ran.count(True) == 1
        assert await dedup_harness.effects(inbox) == ["effect"]

    async def test_duplicate_gets_the_stored_outcome(self, dedup_harness: DedupHarness) -> None:
        inbox, event = await dedup_harness.inbox(), FakeDelivery().event
        async with inbox.transaction(FakeDelivery(event), consumer="c", key="k") as tx:
            tx.outcome = b"published"
        with pytest.raises(AlreadyProcessed) as caught:
            async with inbox.transaction(FakeDelivery(event), consumer="c", key="k"):
                pass
        assert caught.value.outcome == b"published"

    async def test_current_is_the_processing_transaction(self, dedup_harness: DedupHarness) -> None:
        inbox, seen = await dedup_harness.inbox(), []

        async def work(tx: InboxTx) -> None:
            seen.append(inbox.current() is tx)

        await process(inbox, FakeDelivery(), work, consumer="c")
        assert seen == [True]
        with pytest.raises(LookupError):
            inbox.current()


async def _noop(tx: InboxTx) -> None:
    """Does nothing in the transaction."""
