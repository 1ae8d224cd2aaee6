"""Resource lifecycle: open once, close once, never used after close."""

from __future__ import annotations

import asyncio

import pytest

from tidings.errors import ClosedError
from tidings.lifecycle import Resource, State


class Counting(Resource):
    """A resource that counts opens and closes, and can hold `_open` until released."""

    def __init__(self, *, fail_opens: int = 0) -> None:
        self.opens = 0
        self.closes = 0
        self.fail_opens = fail_opens
        self.release_open = asyncio.Event()
        self.release_open.set()

    async def _open(self) -> None:
        await self.release_open.wait()
        if self.fail_opens:
            self.fail_opens -= 1
            raise ConnectionError("service unavailable")
        self.opens += 1

    async def _close(self) -> None:
        await asyncio.sleep(0)
        self.closes += 1

    async def use(self) -> str:
        await self._ensure_open()
        return "used"


async def _started_open(resource: Counting) -> asyncio.Task[Counting]:
    """Start an open that stays inside `_open` until the test releases it."""
    resource.release_open.clear()
    task = asyncio.create_task(resource.open())
    await asyncio.sleep(0)
    return task


async def test_new_resource_starts_new() -> None:
    assert Counting().state is State.NEW


async def test_open_returns_the_resource_open() -> None:
    resource = Counting()
    assert (await resource.open(), resource.state) == (resource, State.OPEN)


async def test_open_twice_opens_once() -> None:
    resource = Counting()
    await resource.open()
    await resource.open()
    assert resource.opens == 1


async def test_concurrent_open_opens_once() -> None:
    resource = Counting()
    resource.release_open.clear()
    tasks = [asyncio.create_task(resource.open()) for _ in range(20)]
    await asyncio.sleep(0)
    resource.release_open.set()
    await asyncio.gather(*tasks)
    assert resource.opens == 1


async def test_concurrent_open_leaves_every_caller_an_open_resource() -> None:
    resource = Counting()
    results = await asyncio.gather(*(resource.open() for _ in range(20)))
    assert {r.state for r in results} == {State.OPEN}


async def test_failed_open_leaves_resource_new() -> None:
    resource = Counting(fail_opens=1)
    with pytest.raises(ConnectionError):
        await resource.open()
    assert resource.state is State.NEW


async def test_open_after_failed_open_retries() -> None:
    resource = Counting(fail_opens=1)
    with pytest.raises(ConnectionError):
        await resource.open()
    await resource.open()
    assert (resource.state, resource.opens) == (State.OPEN, 1)


async def test_use_opens_lazily() -> None:
    resource = Counting()
    assert (await resource.use(), resource.opens) == ("used", 1)


async def test_aclose_closes_an_open_resource() -> None:
    resource = Counting()
    await resource.open()
    await resource.aclose()
    assert (resource.state, resource.closes) == (State.CLOSED, 1)


async def test_aclose_is_idempotent() -> None:
    resource = Counting()
    await resource.open()
    await resource.aclose()
    await resource.aclose()
    assert resource.closes == 1


async def test_concurrent_aclose_closes_once() -> None:
    resource = Counting()
    await resource.open()
    await asyncio.gather(*(resource.aclose() for _ in range(10)))
    assert resource.closes == 1


async def test_aclose_of_unopened_resource_skips_close() -> None:
    resource = Counting()
    await resource.aclose()
    assert (resource.state, resource.closes) == (State.CLOSED, 0)


async def test_open_after_close_raises_closed_error() -> None:
    resource = Counting()
    await resource.open()
    await resource.aclose()
    with pytest.raises(ClosedError):
        await resource.open()


async def test_use_after_close_raises_closed_error() -> None:
    resource = Counting()
    await resource.aclose()
    with pytest.raises(ClosedError) as caught:
        await resource.use()
    assert caught.value.resource == "Counting"


async def test_aclose_during_open_closes_what_open_acquired() -> None:
    resource = Counting()
    opening = await _started_open(resource)
    closing = asyncio.create_task(resource.aclose())
    await asyncio.sleep(0)
    resource.release_open.set()
    await asyncio.gather(opening, closing)
    assert (resource.state, resource.opens, resource.closes) == (State.CLOSED, 1, 1)


async def test_open_queued_behind_aclose_raises_closed_error() -> None:
    resource = Counting()
    first = await _started_open(resource)
    closing = asyncio.create_task(resource.aclose())
    await asyncio.sleep(0)
    late = asyncio.create_task(resource.open())
    await asyncio.sleep(0)
    resource.release_open.set()
    await asyncio.gather(first, closing)
    with pytest.raises(ClosedError):
        await late


async def test_async_with_opens_the_resource() -> None:
    async with Counting() as resource:
        assert resource.state is State.OPEN


async def test_async_with_closes_on_exit() -> None:
    async with Counting() as resource:
        pass
    assert (resource.state, resource.closes) == (State.CLOSED, 1)


async def test_async_with_closes_when_the_body_raises() -> None:
    resource = Counting()
    with pytest.raises(RuntimeError):
        async with resource:
            raise RuntimeError("boom")
    assert resource.state is State.CLOSED
