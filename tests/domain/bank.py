"""A bank account in both styles (an `Aggregate` class and a `Decider`), for the domain tests.

Both styles take the same commands and emit the same payloads, so one test body can drive
either through a `Style`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any

import msgspec

from tidings.codecs import EventTypes
from tidings.domain import Aggregate, Decider, Erased, Personal, Repository, Versioned, when

types = EventTypes()


# -- events -----------------------------------------------------------------------------------


@types.register("bank.account.opened")
@dataclass(frozen=True)
class AccountOpened:
    owner: Annotated[str | Erased, Personal]
    iban: Annotated[str | Erased | None, Personal] = None


@types.register("bank.money.deposited")
class MoneyDeposited(msgspec.Struct, frozen=True):
    cents: int


@types.register("bank.money.withdrawn")
class MoneyWithdrawn(msgspec.Struct, frozen=True):
    cents: int


@types.register("bank.account.closed")
class AccountClosed(msgspec.Struct, frozen=True):
    pass


# -- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Open:
    owner: str
    iban: str | None = None


@dataclass(frozen=True)
class Deposit:
    cents: int


@dataclass(frozen=True)
class DepositMany:
    amounts: tuple[int, ...]


@dataclass(frozen=True)
class Withdraw:
    cents: int


@dataclass(frozen=True)
class Close:
    pass


class Refused(Exception):
    """The account refuses a command (an invariant would break)."""


# -- the aggregate class ----------------------------------------------------------------------


class Account(Aggregate):
    stream_prefix = "account"

    owner: str | Erased
    iban: str | Erased | None
    balance: int
    deposits: tuple[int, ...]
    closed: bool

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner = ""
        self.iban = None
        self.balance = 0
        self.deposits = ()
        self.closed = False

    def handle(self, command: object) -> None:
        for payload in decide(command, self.state()):
            self.record(payload)

    def state(self) -> State:
        return State(self.version > 0, self.owner, self.iban, self.balance, self.closed)

    @when(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        self.owner, self.iban = event.owner, event.iban

    @when(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.cents
        self.deposits += (event.cents,)

    @when(MoneyWithdrawn)
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.balance -= event.cents

    @when(AccountClosed)
    def _closed(self, event: AccountClosed) -> None:
        self.closed = True


# -- the decider ------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    opened: bool = False
    owner: str | Erased = ""
    iban: str | Erased | None = None
    balance: int = 0
    closed: bool = False


def decide(command: object, state: State) -> list[object]:
    """What a command means for an account (shared by both styles)."""
    if isinstance(command, Open):
        if state.opened:
            raise Refused("already open")
        return [AccountOpened(command.owner, command.iban)]
    if not state.opened or state.closed:
        raise Refused("the account is not open")
    match command:
        case Deposit(cents=cents):
            return [MoneyDeposited(cents)] if cents > 0 else []
        case DepositMany(amounts=amounts):
            return [MoneyDeposited(cents) for cents in amounts if cents > 0]
        case Withdraw(cents=cents) if cents > state.balance:
            raise Refused(f"cannot withdraw {cents}: the balance is {state.balance}")
        case Withdraw(cents=cents):
            return [MoneyWithdrawn(cents)]
        case Close():
            return [AccountClosed()]
    raise TypeError(f"unknown command {command!r}")


def evolve(state: State, event: object) -> State:
    match event:
        case AccountOpened(owner=owner, iban=iban):
            return replace(state, opened=True, owner=owner, iban=iban)
        case MoneyDeposited(cents=cents):
            return replace(state, balance=state.balance + cents)
        case MoneyWithdrawn(cents=cents):
            return replace(state, balance=state.balance - cents)
        case AccountClosed():
            return replace(state, closed=True)
    raise TypeError(f"unknown event {event!r}")


ledger: Decider[object, State, object] = Decider(
    decide=decide, evolve=evolve, initial_state=State(), stream_prefix="ledger"
)


# -- one interface over both styles -----------------------------------------------------------


class Style:
    """Drives one style through the same calls."""

    name: str
    model: Any

    def repository(self, backend: Any, **options: Any) -> Repository[Any]:
        return Repository(backend.store, types, self.model, source="/bank", **options)

    async def run(self, repo: Repository[Any], id: str, command: object, **options: Any) -> None:
        raise NotImplementedError

    def state(self, loaded: Any) -> State:
        raise NotImplementedError

    def record(self, loaded: Any, command: object) -> None:
        """Decide a command on a loaded instance without saving (for conflict tests)."""
        raise NotImplementedError


class AggregateStyle(Style):
    name = "aggregate"
    model = Account

    async def run(self, repo: Repository[Any], id: str, command: object, **options: Any) -> None:
        await repo.execute(id, lambda account: account.handle(command), **options)

    def state(self, loaded: Account) -> State:
        return loaded.state()

    def record(self, loaded: Account, command: object) -> None:
        loaded.handle(command)


class DeciderStyle(Style):
    name = "decider"
    model = ledger

    async def run(self, repo: Repository[Any], id: str, command: object, **options: Any) -> None:
        await repo.handle(id, command, **options)

    def state(self, loaded: Versioned[State]) -> State:
        return loaded.state

    def record(self, loaded: Versioned[State], command: object) -> None:
        for event in decide(command, loaded.state):
            loaded.state = evolve(loaded.state, event)
            loaded.version += 1
            loaded.pending.append(event)


STYLES: Sequence[Style] = (AggregateStyle(), DeciderStyle())
