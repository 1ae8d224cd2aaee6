"""Example 3: a bank account in both styles, an Aggregate class and a Decider, on one repository.

Shows: commands checked against state, optimistic concurrency with retries, snapshots every
few events, a temporal load, and crypto-shredding of the owner's name (GDPR: forget the owner,
the name reads as Erased, the hash chain still verifies).

Run it: ``python examples/03_bank_account.py`` (creates ``bank.db`` in a temp folder).
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

from tidings import EventTypes
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.adapters.sqlite.keys import SQLiteKeyStore
from tidings.adapters.sqlite.snapshots import SQLiteSnapshotStore
from tidings.domain import (
    Aggregate,
    Decider,
    Erased,
    EveryNEvents,
    Personal,
    Repository,
    Shredder,
    Versioned,
    when,
)

types = EventTypes()


@types.register("bank.account.opened")
@dataclass(frozen=True)
class AccountOpened:
    owner: Annotated[str | Erased, Personal]  # encrypted with the account's key


@types.register("bank.money.deposited")
@dataclass(frozen=True)
class MoneyDeposited:
    cents: int


@types.register("bank.money.withdrawn")
@dataclass(frozen=True)
class MoneyWithdrawn:
    cents: int


class InsufficientFunds(Exception):
    """A withdrawal larger than the balance."""


# -- style 1: an aggregate class ----------------------------------------------------------------


class BankAccount(Aggregate):
    owner: str | Erased
    balance: int

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner = ""
        self.balance = 0

    def open(self, owner: str) -> None:
        self.record(AccountOpened(owner))

    def deposit(self, cents: int) -> None:
        self.record(MoneyDeposited(cents))

    def withdraw(self, cents: int) -> None:
        if cents > self.balance:
            raise InsufficientFunds(f"{cents} > {self.balance}")
        self.record(MoneyWithdrawn(cents))

    @when(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        self.owner = event.owner

    @when(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.cents

    @when(MoneyWithdrawn)
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.balance -= event.cents


# -- style 2: a decider -------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    owner: str | Erased = ""
    balance: int = 0


@dataclass(frozen=True)
class Open:
    owner: str


@dataclass(frozen=True)
class Deposit:
    cents: int


@dataclass(frozen=True)
class Withdraw:
    cents: int


def decide(command: object, state: Account) -> list[object]:
    match command:
        case Open(owner=owner):
            return [AccountOpened(owner)]
        case Deposit(cents=cents):
            return [MoneyDeposited(cents)]
        case Withdraw(cents=cents) if cents > state.balance:
            raise InsufficientFunds(f"{cents} > {state.balance}")
        case Withdraw(cents=cents):
            return [MoneyWithdrawn(cents)]
    raise TypeError(command)


def evolve(state: Account, event: object) -> Account:
    match event:
        case AccountOpened(owner=owner):
            return replace(state, owner=owner)
        case MoneyDeposited(cents=cents):
            return replace(state, balance=state.balance + cents)
        case MoneyWithdrawn(cents=cents):
            return replace(state, balance=state.balance - cents)
    raise TypeError(event)


ledger: Decider[object, Account, object] = Decider(
    decide=decide, evolve=evolve, initial_state=Account(), stream_prefix="ledger"
)


async def aggregate_style(repo: Repository[BankAccount]) -> BankAccount:
    """Open, then two racing deposits (one retries after a conflict), then a refused withdrawal."""
    await repo.execute("acc-1", lambda account: account.open("Ada Lovelace"))
    await asyncio.gather(
        repo.execute("acc-1", lambda account: account.deposit(500)),
        repo.execute("acc-1", lambda account: account.deposit(250)),
    )
    try:
        await repo.execute("acc-1", lambda account: account.withdraw(10_000))
    except InsufficientFunds as refused:
        print(f"aggregate: withdrawal refused ({refused})")
    account = await repo.load("acc-1")
    print(f"aggregate: {account.owner} has {account.balance} cents at version {account.version}")
    return account


async def decider_style(repo: Repository[Versioned[Account]]) -> None:
    """The same account as pure functions; then a look at the past."""
    ledger.given(MoneyDeposited(5)).when(Withdraw(5)).then(MoneyWithdrawn(5))  # a unit test
    for command in (Open("Grace Hopper"), Deposit(300), Withdraw(120), Deposit(40)):
        await repo.handle("acc-2", command)
    now, then = await repo.load("acc-2"), await repo.load("acc-2", as_of=2)
    print(f"decider: balance {now.state.balance} now, {then.state.balance} at version 2")


async def main(folder: Path) -> tuple[int, bool]:
    """Run both styles on one SQLite file; forget the first owner; verify the hash chain."""
    path = folder / "bank.db"
    async with (
        SQLiteEventStore(path) as store,
        SQLiteSnapshotStore(path) as snapshots,
        SQLiteKeyStore(path) as keys,
    ):
        shredder = Shredder(keys, types, store=store)
        every_2 = EveryNEvents(2)
        accounts = Repository(
            store,
            types,
            BankAccount,
            source="/bank",
            snapshots=snapshots,
            policy=every_2,
            shredder=shredder,
        )
        account = await aggregate_style(accounts)
        ledgers = Repository(
            store,
            types,
            ledger,
            source="/bank",
            snapshots=snapshots,
            policy=every_2,
            shredder=shredder,
        )
        await decider_style(ledgers)
        await shredder.forget("acc-1")
        forgotten = await accounts.load("acc-1")
        print(f"after forget: owner {forgotten.owner!r}, balance {forgotten.balance}")
        report = await store.verify()
        print(f"hash chain ok after forget: {report.ok} ({report.records} records)")
        return account.balance, report.ok


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
