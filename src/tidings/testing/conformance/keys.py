"""The key store conformance suite: what every `KeyStore` backend must do.

An adapter runs it with a ``key_harness`` fixture (a `KeyStoreHarness`) and a subclass of
`KeyStoreConformance`, like the snapshot suite (`tidings.testing.conformance.snapshots`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

import pytest

from tidings.adapters.memory.keys import MemoryKeyStore
from tidings.domain.keys import KEY_BYTES, KeyStore
from tidings.errors import ClosedError

__all__ = ["KeyStoreConformance", "KeyStoreHarness", "MemoryKeyHarness"]


class KeyStoreHarness(Protocol):
    """Makes fresh, opened key stores of one backend for the suite."""

    durable: bool
    """True when a store opened again on the same storage sees the first one's keys."""

    async def make(self) -> KeyStore:
        """Return a new, opened, empty store."""
        ...

    async def reopen(self, store: KeyStore) -> KeyStore:
        """Return a new opened store on the storage of ``store`` (durable backends only)."""
        ...

    async def aclose(self) -> None:
        """Close every store made and remove what they stored."""
        ...


class MemoryKeyHarness:
    """`MemoryKeyStore`, fresh per store; not durable."""

    durable = False

    def __init__(self) -> None:
        self._made: list[KeyStore] = []

    async def make(self) -> KeyStore:
        store = await MemoryKeyStore().open()
        self._made.append(store)
        return store

    async def reopen(self, store: KeyStore) -> KeyStore:
        raise NotImplementedError("memory stores are not durable")

    async def aclose(self) -> None:
        for store in self._made:
            await store.aclose()


def _subject() -> str:
    return f"subject-{uuid.uuid4().hex[:12]}"


class KeyStoreConformance:
    """Every key store behaviour; subclass it with a ``key_harness`` fixture."""

    async def test_get_of_unknown_subject_returns_none(self, key_harness: KeyStoreHarness) -> None:
        store = await key_harness.make()
        assert await store.get(_subject()) is None

    async def test_get_or_create_returns_a_256_bit_key(self, key_harness: KeyStoreHarness) -> None:
        store = await key_harness.make()
        key = await store.get_or_create(_subject())
        assert isinstance(key, bytes)
        assert len(key) == KEY_BYTES

    async def test_get_or_create_returns_the_same_key_again(
        self, key_harness: KeyStoreHarness
    ) -> None:
        store = await key_harness.make()
        subject = _subject()
        first = await store.get_or_create(subject)
        assert (await store.get_or_create(subject), await store.get(subject)) == (first, first)

    async def test_keys_differ_per_subject(self, key_harness: KeyStoreHarness) -> None:
        store = await key_harness.make()
        keys = {await store.get_or_create(_subject()) for _ in range(5)}
        assert len(keys) == 5

    async def test_concurrent_get_or_create_returns_one_key(
        self, key_harness: KeyStoreHarness
    ) -> None:
        store = await key_harness.make()
        subject = _subject()
        keys = await asyncio.gather(*(store.get_or_create(subject) for _ in range(20)))
        assert len(set(keys)) == 1

    async def test_forget_deletes_the_key(self, key_harness: KeyStoreHarness) -> None:
        store = await key_harness.make()
        subject = _subject()
        await store.get_or_create(subject)
        assert await store.forget(subject) is True
        assert await store.get(subject) is None

    async def test_forget_of_unknown_subject_returns_false(
        self, key_harness: KeyStoreHarness
    ) -> None:
        store = await key_harness.make()
        assert await store.forget(_subject()) is False

    async def test_get_or_create_after_forget_makes_a_new_key(
        self, key_harness: KeyStoreHarness
    ) -> None:
        store = await key_harness.make()
        subject = _subject()
        old = await store.get_or_create(subject)
        await store.forget(subject)
        assert await store.get_or_create(subject) != old

    async def test_forget_keeps_other_subjects_keys(self, key_harness: KeyStoreHarness) -> None:
        store = await key_harness.make()
        gone, kept = _subject(), _subject()
        await store.get_or_create(gone)
        key = await store.get_or_create(kept)
        await store.forget(gone)
        assert await store.get(kept) == key

    async def test_keys_and_forgetting_survive_reopening(
        self, key_harness: KeyStoreHarness
    ) -> None:
        if not key_harness.durable:
            pytest.skip("the backend is not durable")
        store = await key_harness.make()
        kept, gone = _subject(), _subject()
        key = await store.get_or_create(kept)
        await store.get_or_create(gone)
        await store.forget(gone)
        await store.aclose()
        again = await key_harness.reopen(store)
        assert (await again.get(kept), await again.get(gone)) == (key, None)

    async def test_closed_store_raises_closed_error(self, key_harness: KeyStoreHarness) -> None:
        store = await key_harness.make()
        await store.aclose()
        await store.aclose()  # idempotent
        with pytest.raises(ClosedError):
            await store.get_or_create(_subject())
