"""The repository, both styles, every backend: load, save, concurrency, retries."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tidings.codecs import SCHEMA_VERSION
from tidings.domain import DomainError, Repository
from tidings.errors import ConcurrencyConflict

from .bank import (
    STYLES,
    Account,
    Close,
    Deposit,
    DepositMany,
    MoneyDeposited,
    Open,
    Refused,
    State,
    Style,
    Withdraw,
    types,
)
from .conftest import Backend
from .stores import SlowReads


@pytest.fixture(params=STYLES, ids=lambda s: s.name)
def style(request: pytest.FixtureRequest) -> Style:
    """One of the two styles: the aggregate class or the decider."""
    return request.param  # type: ignore[no-any-return]


def new_id() -> str:
    return uuid.uuid4().hex[:12]


async def test_load_of_new_id_returns_initial_state_at_version_zero(
    backend: Backend, style: Style
) -> None:
    loaded = await style.repository(backend).load(new_id())
    assert (loaded.version, style.state(loaded)) == (0, State())


async def test_saved_events_load_back_as_state(backend: Backend, style: Style) -> None:
    repo, id = style.repository(backend), new_id()
    for command in (Open("ada"), Deposit(500), Withdraw(200), DepositMany((1, 2))):
        await style.run(repo, id, command)
    loaded = await repo.load(id)
    assert loaded.version == 5
    assert style.state(loaded) == State(opened=True, owner="ada", balance=303)


async def test_saved_events_carry_source_subject_and_schema_version(
    backend: Backend, style: Style
) -> None:
    repo, id = style.repository(backend), new_id()
    await style.run(repo, id, Open("ada"))
    [record] = await backend.store.read_stream(repo.stream_id(id))
    event = record.event
    assert (event.type, event.source, event.subject) == ("bank.account.opened", "/bank", id)
    assert event.extensions[SCHEMA_VERSION] == 1


async def test_stream_id_joins_prefix_and_id(backend: Backend, style: Style) -> None:
    repo = style.repository(backend)
    assert repo.stream_id("x-1") == f"{'account' if style.name == 'aggregate' else 'ledger'}-x-1"


async def test_save_of_stale_instance_raises_concurrency_conflict(
    backend: Backend, style: Style
) -> None:
    repo, id = style.repository(backend), new_id()
    await style.run(repo, id, Open("ada"))
    first, second = await repo.load(id), await repo.load(id)
    style.record(first, Deposit(1))
    style.record(second, Deposit(2))
    await repo.save(first)
    with pytest.raises(ConcurrencyConflict):
        await repo.save(second)


async def test_save_of_new_instance_for_existing_stream_raises_concurrency_conflict(
    backend: Backend,
) -> None:
    repo, id = Repository(backend.store, types, Account, source="/bank"), new_id()
    first, second = Account(id), Account(id)
    first.handle(Open("ada"))
    second.handle(Open("bob"))
    await repo.save(first)
    with pytest.raises(ConcurrencyConflict):
        await repo.save(second)


async def test_save_without_pending_events_appends_nothing(backend: Backend, style: Style) -> None:
    repo, id = style.repository(backend), new_id()
    await style.run(repo, id, Open("ada"))
    await style.run(repo, id, Deposit(0))  # decides no events
    assert await repo.save(await repo.load(id)) is None
    assert len(await backend.store.read_stream(repo.stream_id(id))) == 1


async def test_refused_command_raises_and_appends_nothing(backend: Backend, style: Style) -> None:
    repo, id = style.repository(backend), new_id()
    await style.run(repo, id, Open("ada"))
    with pytest.raises(Refused):
        await style.run(repo, id, Withdraw(1))
    assert len(await backend.store.read_stream(repo.stream_id(id))) == 1


async def test_concurrent_commands_both_succeed_with_retries(
    backend: Backend, style: Style
) -> None:
    slow = SlowReads(backend.store)
    repo = Repository(slow, types, style.model, source="/bank")  # type: ignore[call-overload]
    id = new_id()
    await style.run(repo, id, Open("ada"))
    slow.reads = 0
    await asyncio.gather(style.run(repo, id, Deposit(10)), style.run(repo, id, Deposit(20)))
    assert style.state(await repo.load(id)).balance == 30
    assert slow.reads >= 3  # both loaded, one conflicted and loaded again


async def test_conflict_is_raised_when_retries_run_out(backend: Backend, style: Style) -> None:
    slow = SlowReads(backend.store)
    repo = Repository(slow, types, style.model, source="/bank")  # type: ignore[call-overload]
    id = new_id()
    await style.run(repo, id, Open("ada"))
    results = await asyncio.gather(
        style.run(repo, id, Deposit(10), retries=0),
        style.run(repo, id, Deposit(20), retries=0),
        return_exceptions=True,
    )
    assert sum(isinstance(r, ConcurrencyConflict) for r in results) == 1


async def test_execute_awaits_an_async_command(backend: Backend) -> None:
    repo, id = Repository(backend.store, types, Account, source="/bank"), new_id()

    async def open_later(account: Account) -> None:
        await asyncio.sleep(0)
        account.handle(Open("ada"))

    saved = await repo.execute(id, open_later)
    assert (saved.version, saved.pending) == (1, [])


async def test_handle_returns_the_events_appended(backend: Backend) -> None:
    repo = STYLES[1].repository(backend)
    id = new_id()
    await repo.handle(id, Open("ada"))
    assert await repo.handle(id, DepositMany((3, 4))) == [MoneyDeposited(3), MoneyDeposited(4)]


async def test_handle_on_aggregate_repository_raises_domain_error(backend: Backend) -> None:
    repo = Repository(backend.store, types, Account, source="/bank")
    with pytest.raises(DomainError):
        await repo.handle(new_id(), Close())


async def test_negative_retries_raise_value_error(backend: Backend, style: Style) -> None:
    with pytest.raises(ValueError, match="retries"):
        await style.run(style.repository(backend), new_id(), Open("ada"), retries=-1)


def test_repository_rejects_a_model_that_is_neither_style() -> None:
    with pytest.raises(TypeError):
        Repository(object(), types, object(), source="/bank")  # type: ignore[call-overload]
