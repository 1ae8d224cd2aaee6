"""The idempotency exercise (examples/06): one SMS per shipped order, per mechanism.

The provider is the example's real HTTP server on a free local port; the consumer is the
example's router app, delivered the event once, again while the first send is in flight, and
again after a crash.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tidings.adapters.sqlite.dedup import SQLiteDedupStore
from tidings.idempotency import Effects, provider_key

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "06_idempotent_notifications.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_06", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_06"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


example = _load()


@pytest.fixture
async def provider() -> AsyncIterator[Any]:
    served = example.FakeSmsProvider(latency=0.0)
    await served.start()
    yield served
    await served.stop()


@pytest.fixture
async def sms(provider: Any) -> AsyncIterator[Any]:
    client = example.SmsClient(provider.url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteDedupStore]:
    async with SQLiteDedupStore(tmp_path / "dedup.db") as opened:
        yield opened


async def test_each_mechanism_sends_one_sms_for_three_deliveries(tmp_path: Path) -> None:
    sent = await example.main(tmp_path)
    assert sent == {"unprotected": 3, "dedup-key": 1, "provider-key": 1, "state-machine": 1}


async def test_provider_replays_the_first_response_for_a_repeated_key(
    provider: Any, sms: Any
) -> None:
    first = await sms.send("+1", "hi", key="k-1")
    again = await sms.send("+1", "hi", key="k-1")
    other = await sms.send("+1", "hi")
    assert (first, again, other) == ("sms-1", "sms-1", "sms-2")
    assert provider.requests == 3
    assert len(provider.sent) == 2


async def test_state_machine_resends_with_the_same_key_after_a_crash_mid_send(
    provider: Any, sms: Any, store: SQLiteDedupStore
) -> None:
    stored = "sms/sms:o-1"
    await sms.send("+1", "shipped", key=provider_key(stored))  # sent, then the worker died
    await store.claim(stored, "the-dead-worker", lease=0.1)
    effects = Effects(store, consumer="sms", poll=0.05)
    outcome = await effects.run("sms:o-1", lambda key: sms.send("+1", "shipped", key=key))
    assert outcome.performed  # it did call the provider again...
    assert provider.count("+1") == 1  # ...which sent nothing twice


async def test_dedup_key_alone_resends_after_a_crash_mid_send(
    provider: Any, sms: Any, store: SQLiteDedupStore
) -> None:
    stored = "dedup-key/o-1"
    await sms.send("+1", "shipped")  # sent, then the worker died before recording the key
    await store.claim(stored, "the-dead-worker", lease=0.1)
    effects = Effects(store, consumer="dedup-key", poll=0.05)
    await effects.run("o-1", lambda key: sms.send("+1", "shipped"))  # no provider key given
    assert provider.count("+1") == 2  # the window the docs describe
