"""A projection runner process for the fault tests, to be killed with SIGKILL at any moment.

Run as ``python -m tests.projections.fault_worker BACKEND WHERE STORE NAME OWNER SEED``: it
runs the backend's counter projection ``NAME`` over the SQLite event store file ``STORE`` into
the read model at ``WHERE`` (a file, a schema or a key prefix), with a short lease, small
batches and slow commits. It prints ``ready`` once running, ``in-commit`` when a commit is
about to sleep just before COMMIT (the parent's cue to kill it mid-transaction), and
``commit P`` after each committed batch.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Final

from tests.projections.backends import counter, read_model_at

from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.adapters.sqlite.projections import SQLiteReadModel
from tidings.projections import Batch, ProjectionRunner, ReadModel
from tidings.testing.faults import READY, say

LEASE_TTL: Final = 0.5
SLOW: Final = 0.3
"""Share of commits that pause before COMMIT."""
PAUSE: Final = 0.01


def _install_hook(model: ReadModel, chance: random.Random) -> None:
    def slow() -> bool:
        if chance.random() >= SLOW:
            return False
        say("in-commit")
        return True

    def on_thread() -> None:
        if slow():
            time.sleep(PAUSE)

    async def in_loop() -> None:
        if slow():
            await asyncio.sleep(PAUSE)

    if isinstance(model, SQLiteReadModel):
        model.before_commit = on_thread  # called on the connection's thread
    else:
        model.before_commit = in_loop  # type: ignore[attr-defined]


def _said(batch: Batch) -> None:
    say(f"commit {batch.up_to}")


async def main(backend: str, where: str, store_path: str, name: str, owner: str, seed: str) -> None:
    chance = random.Random(seed)
    model = read_model_at(backend, where)
    _install_hook(model, chance)
    async with (
        SQLiteEventStore(store_path, synchronous="NORMAL") as store,
        model,
        ProjectionRunner(
            store,
            model,
            [counter(backend, name)],
            owner=owner,
            lease_ttl=LEASE_TTL,
            batch_size=chance.choice([1, 3, 10, 50]),
            retry_delay=0.05,
            on_commit=_said,
        ),
    ):
        say(READY)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
