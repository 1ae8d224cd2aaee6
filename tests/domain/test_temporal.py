"""Temporal loads: an aggregate as it was at a version or at a time, with and without snapshots."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidings.domain import EveryNEvents, Repository
from tidings.errors import ConcurrencyConflict

from .bank import STYLES, Deposit, Open, State, Style, types
from .conftest import Backend
from .stores import CountingReads


@pytest.fixture(params=STYLES, ids=lambda s: s.name)
def style(request: pytest.FixtureRequest) -> Style:
    return request.param  # type: ignore[no-any-return]


def new_id() -> str:
    return uuid.uuid4().hex[:12]


async def history(style: Style, repo: Repository[Any], id: str, deposits: int) -> None:
    await style.run(repo, id, Open("ada"))
    for cents in range(1, deposits + 1):
        await style.run(repo, id, Deposit(cents))


async def test_load_as_of_version_returns_the_past_state(backend: Backend, style: Style) -> None:
    repo, id = style.repository(backend), new_id()
    await history(style, repo, id, 5)
    past = await repo.load(id, as_of=3)  # opened, then 1 and 2 deposited
    assert (past.version, style.state(past).balance) == (3, 3)


async def test_load_as_of_version_zero_returns_the_initial_state(
    backend: Backend, style: Style
) -> None:
    repo, id = style.repository(backend), new_id()
    await history(style, repo, id, 2)
    past = await repo.load(id, as_of=0)
    assert (past.version, style.state(past)) == (0, State())


async def test_load_as_of_time_returns_the_state_recorded_by_then(
    backend: Backend, style: Style
) -> None:
    repo, id = style.repository(backend), new_id()
    await history(style, repo, id, 2)
    await asyncio.sleep(0.01)
    moment = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await style.run(repo, id, Deposit(100))
    past = await repo.load(id, as_of=moment)
    assert (past.version, style.state(past).balance) == (3, 3)


async def test_load_as_of_time_before_the_first_event_returns_the_initial_state(
    backend: Backend, style: Style
) -> None:
    repo, id = style.repository(backend), new_id()
    await history(style, repo, id, 1)
    past = await repo.load(id, as_of=datetime.now(UTC) - timedelta(days=1))
    assert (past.version, style.state(past)) == (0, State())


async def test_load_as_of_version_starts_from_an_older_snapshot(
    backend: Backend, style: Style
) -> None:
    writer = style.repository(backend, snapshots=backend.snapshots, policy=EveryNEvents(2))
    id = new_id()
    await history(style, writer, id, 7)  # snapshots at 2, 4, 6, 8
    reads = CountingReads(backend.store)
    repo = Repository(reads, types, style.model, source="/bank", snapshots=backend.snapshots)  # type: ignore[call-overload]
    past = await repo.load(id, as_of=5)
    assert (past.version, style.state(past).balance, reads.starts) == (5, 1 + 2 + 3 + 4, [5])


async def test_load_as_of_time_ignores_snapshots_taken_later(
    backend: Backend, style: Style
) -> None:
    repo = style.repository(backend, snapshots=backend.snapshots, policy=EveryNEvents(2))
    id = new_id()
    await history(style, repo, id, 2)
    await asyncio.sleep(0.01)
    moment = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await history_more(style, repo, id, 4)
    past = await repo.load(id, as_of=moment)
    assert (past.version, style.state(past).balance) == (3, 3)


async def history_more(style: Style, repo: Repository[Any], id: str, deposits: int) -> None:
    for _ in range(deposits):
        await style.run(repo, id, Deposit(1000))


async def test_saving_a_past_state_raises_concurrency_conflict(
    backend: Backend, style: Style
) -> None:
    repo, id = style.repository(backend), new_id()
    await history(style, repo, id, 3)
    past = await repo.load(id, as_of=2)
    style.record(past, Deposit(5))
    with pytest.raises(ConcurrencyConflict):
        await repo.save(past)
