"""`Effects`: the pending -> sending -> sent state machine, and its transitions as properties."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.adapters.memory.dedup import MemoryDedupStore
from tidings.idempotency import Effects, EffectState, provider_key
from tidings.idempotency.effects import Step, advance

steps = st.lists(st.sampled_from(list(Step)), max_size=30)


def _walk(path: list[Step]) -> list[EffectState]:
    """Apply the allowed steps of ``path`` from PENDING; return the states entered."""
    state, states = EffectState.PENDING, [EffectState.PENDING]
    for step in path:
        try:
            state = advance(state, step)
        except ValueError:
            continue
        states.append(state)
    return states


@given(steps)
def test_sent_is_final_for_any_steps(path: list[Step]) -> None:
    states = _walk(path)
    if EffectState.SENT in states:
        assert states[states.index(EffectState.SENT) :] == [EffectState.SENT]


@given(steps)
def test_every_send_is_claimed_first_for_any_steps(path: list[Step]) -> None:
    states = _walk(path)
    for before, after in itertools.pairwise(states):
        if after is EffectState.SENDING:
            assert before is EffectState.PENDING
        if after is EffectState.SENT:
            assert before is EffectState.SENDING


@pytest.mark.parametrize("step", [Step.SUCCEED, Step.FAIL, Step.EXPIRE])
def test_advance_refuses_a_step_pending_does_not_allow(step: Step) -> None:
    with pytest.raises(ValueError, match="cannot"):
        advance(EffectState.PENDING, step)


def test_provider_key_is_stable_for_a_key() -> None:
    assert provider_key("sms/o-1") == provider_key("sms/o-1") != provider_key("sms/o-2")


async def test_run_sends_once_and_passes_the_provider_key() -> None:
    sent: list[str] = []

    async def send(key: str) -> str:
        sent.append(key)
        return "msg-1"

    async with MemoryDedupStore() as store:
        effects = Effects(store, consumer="sms")
        first = await effects.run("o-1", send)
        again = await effects.run("o-1", send)
    assert (first.performed, first.value, again.performed) == (True, "msg-1", False)
    assert sent == [provider_key("sms/o-1")] == [first.provider_key]


async def test_run_releases_the_key_when_the_send_fails() -> None:
    states: list[EffectState] = []

    async def failing(key: str) -> None:
        raise ConnectionError("provider down")

    async with MemoryDedupStore() as store:
        effects = Effects(store, consumer="sms", on_state=lambda _, s: states.append(s))
        with pytest.raises(ConnectionError):
            await effects.run("o-1", failing)
        assert (await effects.run("o-1", _ok)).performed
    assert states == [
        EffectState.SENDING,
        EffectState.PENDING,
        EffectState.SENDING,
        EffectState.SENT,
    ]


async def test_run_waits_while_another_worker_is_sending() -> None:
    calls: list[str] = []

    async def slow(key: str) -> None:
        calls.append(key)
        await asyncio.sleep(0.05)

    async with MemoryDedupStore() as store:
        effects = Effects(store, consumer="sms", poll=0.01)
        outcomes = await asyncio.gather(*(effects.run("o-1", slow) for _ in range(4)))
    assert [o.performed for o in outcomes].count(True) == 1
    assert len(calls) == 1


async def test_run_sends_again_with_the_same_key_after_the_lease_expired() -> None:
    keys: list[str] = []

    async def send(key: str) -> None:
        keys.append(key)

    async with MemoryDedupStore() as store:
        await store.claim("sms/o-1", "a-worker-that-died", lease=0.05)
        await Effects(store, consumer="sms", poll=0.02).run("o-1", send)
    assert keys == [provider_key("sms/o-1")]


async def _ok(key: str) -> str:
    return key
