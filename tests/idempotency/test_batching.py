"""`Coalesced`: concurrent lookups share one fetch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from tidings.idempotency.batching import Coalesced


async def test_concurrent_gets_share_one_fetch() -> None:
    fetched: list[list[str]] = []

    async def fetch(keys: list[str]) -> Mapping[str, int]:
        fetched.append(keys)
        await asyncio.sleep(0.01)
        return {key: len(key) for key in keys if key != "absent"}

    lookups = Coalesced(fetch)
    found = await asyncio.gather(*(lookups.get(k) for k in ("a", "bb", "a", "absent")))
    assert found == [1, 2, 1, None]
    assert fetched == [["a", "bb", "absent"]]


async def test_a_failed_fetch_fails_its_batch_only() -> None:
    calls = 0

    async def fetch(keys: list[str]) -> Mapping[str, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return dict.fromkeys(keys, 1)

    lookups = Coalesced(fetch)
    with pytest.raises(ConnectionError):
        await lookups.get("a")
    assert await lookups.get("a") == 1
