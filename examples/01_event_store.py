"""Example 1: typed events in an event store, with optimistic concurrency and a live tail.

Run it: ``python examples/01_event_store.py`` (creates ``example.db`` in a temp folder).
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tidings import EventTypes
from tidings.errors import ConcurrencyConflict
from tidings.eventstore import NO_STREAM, open_event_store

types = EventTypes()


@types.register("bank.account.opened")
@dataclass(frozen=True)
class AccountOpened:
    owner: str


@types.register("bank.money.deposited")
@dataclass(frozen=True)
class MoneyDeposited:
    cents: int


async def main(folder: Path) -> int:
    """Open an account, deposit twice, lose a race, and read the balance from the log."""
    async with open_event_store(f"sqlite:///{folder / 'example.db'}") as store:
        opened = types.to_event(AccountOpened("ada"), source="/bank", subject="acc-1")
        result = await store.append("account-acc-1", [opened], expected_version=NO_STREAM)
        deposit = types.to_event(MoneyDeposited(500), source="/bank", caused_by=opened)
        await store.append("account-acc-1", [deposit], expected_version=result.version)
        try:  # a second writer still believes the stream is at version 1
            late = types.to_event(MoneyDeposited(700), source="/bank", caused_by=opened)
            await store.append("account-acc-1", [late], expected_version=result.version)
        except ConcurrencyConflict as conflict:
            print(f"conflict: expected {conflict.expected}, stream at {conflict.actual}")
        balance = 0
        for record in await store.read_stream("account-acc-1"):
            payload = types.from_event(record.event)
            if isinstance(payload, MoneyDeposited):
                balance += payload.cents
        print(f"balance: {balance} cents after {record.version} events")
        report = await store.verify()
        print(f"hash chain ok: {report.ok}")
        return balance


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
