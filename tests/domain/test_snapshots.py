"""Snapshots through the repository: policies, loading from a snapshot, stale and broken ones."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.domain import EveryNEvents, Repository, Snapshot, SnapshotCheck, SnapshotWhen
from tidings.errors import BackendError

from .bank import (
    STYLES,
    Account,
    AccountClosed,
    Close,
    Deposit,
    DepositMany,
    Open,
    Refused,
    Style,
    Withdraw,
    types,
)
from .conftest import Backend
from .stores import CountingReads


@pytest.fixture(params=STYLES, ids=lambda s: s.name)
def style(request: pytest.FixtureRequest) -> Style:
    return request.param  # type: ignore[no-any-return]


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def check(before: int, after: int, events: tuple[object, ...] = ()) -> SnapshotCheck:
    return SnapshotCheck("s-1", before, after, events)


async def fill(style: Style, repo: Repository[Any], id: str, deposits: int) -> None:
    await style.run(repo, id, Open("ada"))
    await style.run(repo, id, DepositMany(tuple(range(1, deposits + 1))))


# -- policies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "due"), [(0, 99, False), (0, 100, True), (99, 105, True), (100, 199, False)]
)
def test_every_n_events_is_due_when_a_save_crosses_a_multiple(
    before: int, after: int, due: bool
) -> None:
    assert EveryNEvents(100).due(check(before, after)) is due


def test_every_n_events_rejects_n_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EveryNEvents(0)


def test_snapshot_when_asks_its_predicate() -> None:
    policy = SnapshotWhen(lambda c: any(isinstance(e, AccountClosed) for e in c.events))
    assert (policy.due(check(1, 2, (AccountClosed(),))), policy.due(check(1, 2))) == (True, False)


# -- through the repository -------------------------------------------------------------------


async def test_save_writes_a_snapshot_when_the_policy_is_due(
    backend: Backend, style: Style
) -> None:
    repo = style.repository(backend, snapshots=backend.snapshots, policy=EveryNEvents(5))
    id = new_id()
    await fill(style, repo, id, 6)  # versions 1 and 2..7: crosses 5
    snapshot = await backend.snapshots.latest(repo.stream_id(id))
    assert (snapshot.version, snapshot.schema_version) == (7, 1)


async def test_load_replays_only_the_events_after_the_snapshot(
    backend: Backend, style: Style
) -> None:
    writer = style.repository(backend, snapshots=backend.snapshots, policy=EveryNEvents(5))
    id = new_id()
    await fill(style, writer, id, 6)
    await style.run(writer, id, Deposit(100))
    reads = CountingReads(backend.store)
    repo = Repository(reads, types, style.model, source="/bank", snapshots=backend.snapshots)  # type: ignore[call-overload]
    loaded = await repo.load(id)
    assert (reads.starts, loaded.version, style.state(loaded).balance) == ([8], 8, 121)


async def test_snapshot_of_another_schema_version_is_ignored_and_rebuilt(
    backend: Backend,
) -> None:
    class AccountV2(Account):
        stream_prefix = "account"
        snapshot_version = 2

    old = Repository(backend.store, types, Account, source="/b", snapshots=backend.snapshots)
    id = new_id()
    await fill(STYLES[0], old, id, 120)
    stream = old.stream_id(id)
    await backend.snapshots.save(Snapshot(stream, 121, 1, b'{"balance": "garbage"}', 0))
    new = Repository(backend.store, types, AccountV2, source="/b", snapshots=backend.snapshots)
    loaded = await new.load(id)
    rebuilt = await backend.snapshots.latest(stream)
    assert (loaded.balance, loaded.version) == (sum(range(121)), 121)
    assert (rebuilt.version, rebuilt.schema_version) == (121, 2)


async def test_unreadable_snapshot_is_ignored_and_rebuilt(
    backend: Backend, style: Style, caplog: pytest.LogCaptureFixture
) -> None:
    repo = style.repository(backend, snapshots=backend.snapshots)
    id = new_id()
    await fill(style, repo, id, 3)
    await backend.snapshots.save(Snapshot(repo.stream_id(id), 4, 1, b"\xff not json", 0))
    with caplog.at_level(logging.WARNING, logger="tidings.domain"):
        loaded = await repo.load(id)
    assert style.state(loaded).balance == 6
    assert "ignored" in caplog.text
    assert (await backend.snapshots.latest(repo.stream_id(id))).state != b"\xff not json"


async def test_failing_snapshot_store_fails_neither_save_nor_load(
    backend: Backend, style: Style, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        async def latest(self, stream_id: str, **options: Any) -> Snapshot | None:
            raise BackendError("connection refused", backend="test")

        async def save(self, snapshot: Snapshot) -> None:
            raise BackendError("disk full", backend="test")

    repo = style.repository(backend, snapshots=Broken(), policy=EveryNEvents(1))
    id = new_id()
    with caplog.at_level(logging.WARNING, logger="tidings.domain"):
        await style.run(repo, id, Open("ada"))
        await style.run(repo, id, Deposit(5))
    assert "not saved" in caplog.text
    assert "unavailable" in caplog.text
    assert style.state(await repo.load(id)).balance == 5


# -- the property: snapshot + tail == full replay ---------------------------------------------

COMMANDS = st.one_of(
    st.builds(Deposit, st.integers(-2, 50)),
    st.builds(DepositMany, st.lists(st.integers(0, 9), max_size=6).map(tuple)),
    st.builds(Withdraw, st.integers(1, 80)),
    st.just(Close()),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    commands=st.lists(COMMANDS, min_size=1, max_size=25),
    every=st.integers(1, 7),
    style=st.sampled_from(STYLES),
    as_of=st.integers(0, 40),
)
async def test_state_from_snapshot_and_tail_equals_full_replay(
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
    commands: list[object],
    every: int,
    style: Style,
    as_of: int,
) -> None:
    policy = EveryNEvents(every)
    snapped = style.repository(backend, snapshots=backend.snapshots, policy=policy)
    replayed = style.repository(backend)
    id = new_id()
    await style.run(snapped, id, Open("ada"))
    for command in commands:
        with contextlib.suppress(Refused):
            await style.run(snapped, id, command)
    assert _view(await snapped.load(id)) == _view(await replayed.load(id))
    assert _view(await snapped.load(id, as_of=as_of)) == _view(await replayed.load(id, as_of=as_of))
    version = (await replayed.load(id)).version
    latest = await backend.snapshots.latest(snapped.stream_id(id))
    assert (latest.version if latest else 0) > version - every - 6  # a recent one is used
    assert "ignored" not in caplog.text  # every snapshot was readable


def _view(loaded: Any) -> tuple[object, ...]:
    if loaded.__class__ is not Account and loaded.__class__.__name__ == "Versioned":
        return (loaded.version, loaded.state)
    state = {k: v for k, v in vars(loaded).items() if not k.startswith("_")}
    return (loaded.version, state)
