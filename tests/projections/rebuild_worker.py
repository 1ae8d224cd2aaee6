"""A rebuild in a process of its own, slow on purpose, for the test that kills it mid-way.

Run as ``python -m tests.projections.rebuild_worker BACKEND WHERE STORE NAME VERSION``: it
rebuilds the backend's counter projection ``NAME`` at ``VERSION`` over the SQLite event store
file ``STORE`` into the read model at ``WHERE``, in batches of 5 events that each pause 5 ms
before COMMIT, printing ``ready`` and then ``progress P`` as its checkpoint moves.
"""

from __future__ import annotations

import asyncio
import sys
import time

from tests.projections.backends import counter, read_model_at

from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.adapters.sqlite.projections import SQLiteReadModel
from tidings.projections import RebuildProgress, rebuild
from tidings.testing.faults import READY, say


async def _pause() -> None:
    await asyncio.sleep(0.005)


def _report(progress: RebuildProgress) -> None:
    say(f"progress {progress.position}")


async def main(backend: str, where: str, store_path: str, name: str, version: str) -> None:
    model = read_model_at(backend, where)
    if isinstance(model, SQLiteReadModel):
        model.before_commit = lambda: time.sleep(0.005)
    else:
        model.before_commit = _pause  # type: ignore[attr-defined]
    projection = counter(backend, name, version=int(version))
    async with SQLiteEventStore(store_path) as store, model:
        say(READY)
        await rebuild(
            store, model, projection, on_progress=_report, interval=0.05, batch_size=5, lease_ttl=1
        )
        say("done")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
