"""Exactly-once effects under SIGKILL: runners killed at random points, many times, per backend.

Two runner processes (owners ``a`` and ``b``) run a counter projection whose handler is not
idempotent (it adds 1 per event), while this test appends events at a steady pace. Again and
again it finds the leader (the next to commit) and kills it with SIGKILL, either mid-commit
(just before COMMIT, after its writes) or after a random pause, then starts it again. At the
end one runner catches up, and the read model must equal one built in a single clean pass and
the counts computed from the log: a double apply or a skipped event would show.
"""

from __future__ import annotations

import asyncio
import collections
import random
import uuid
from pathlib import Path
from typing import Any, Final

import pytest
from tests.projections.backends import counter, harness, location

from tidings import Event
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.projections import ProjectionKey, ProjectionRunner, ReadModel
from tidings.testing.conformance.checkpoints import Counts
from tidings.testing.faults import Worker, start_worker

KILLS: Final = 20
MIN_KILLS: Final = 15
BUDGET: Final = 25.0
"""Seconds of killing at most; a run on 2 busy cores makes ~20 kills in about 15 s."""
PREFILL: Final = 1000
KEYS: Final = 20

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _events(rng: random.Random, count: int) -> list[Event]:
    keys = [f"k{rng.randrange(KEYS)}" for _ in range(count)]
    return [Event(type="count.hit", source="/faults", data={"key": k}) for k in keys]


async def _append_steadily(store: SQLiteEventStore, rng: random.Random, stop: asyncio.Event):
    while not stop.is_set():
        await store.append(f"s-{rng.randrange(50)}", _events(rng, 2))
        await asyncio.sleep(0.01)


class _Killer:
    """Keeps two runner processes alive and kills the leader again and again."""

    def __init__(self, backend: str, model: ReadModel, store: Path, name: str, seed: int):
        self._args = [backend, location(model), str(store), name]
        self._rng = random.Random(seed)
        self.workers: dict[str, Worker] = {}
        self.kills = self.mid_commit = 0

    async def start(self, owner: str) -> Worker:
        if owner in self.workers:  # never two live workers under one owner id
            await self.workers.pop(owner).aclose()
        args = [*self._args, owner, str(self._rng.random())]
        worker = await start_worker("tests.projections.fault_worker", *args, name=owner)
        self.workers[owner] = worker
        return worker

    async def kill_leader(self) -> None:
        for owner in ("a", "b"):
            if owner not in self.workers:
                await self.start(owner)
        owner = await self._leader()
        victim = self.workers.pop(owner)
        if self._rng.random() < 0.5 and await self._in_commit(victim):
            self.mid_commit += 1
        else:
            await asyncio.sleep(self._rng.uniform(0.02, 0.4))
        victim.kill()
        await victim.wait(timeout=10)
        self.kills += 1

    async def _leader(self) -> str:
        waits = {
            asyncio.ensure_future(w.wait_for(_commit, after=len(w.lines), timeout=5)): owner
            for owner, w in self.workers.items()
        }
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        first = next(iter(done))
        return waits[first] if first.exception() is None else self._rng.choice(list(self.workers))

    async def _in_commit(self, worker: Worker) -> bool:
        try:
            await worker.wait_for("in-commit", after=len(worker.lines), timeout=1)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        while self.workers:
            await self.workers.popitem()[1].aclose()


def _commit(line: str) -> bool:
    return line.startswith("commit ")


async def _expected(store: SQLiteEventStore) -> Counts:
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for record in await store.read_all():
        entry = counts[str(record.event.data["key"])]  # type: ignore[index]
        entry[0] += 1
        entry[1] += record.position
    return {key: (n, total) for key, (n, total) in counts.items()}


async def _caught_up(model: ReadModel, name: str, head: int) -> None:
    state = await model.lookup(ProjectionKey(name, 1))
    while state is None or state.position < head:
        await asyncio.sleep(0.05)
        state = await model.lookup(ProjectionKey(name, 1))


async def _kill_repeatedly(killer: _Killer, store: SQLiteEventStore, rng: random.Random) -> int:
    """Kill leaders while appending at a steady pace; return the log's head afterwards."""
    await store.append("prefill", _events(rng, PREFILL))
    stop = asyncio.Event()
    appender = asyncio.create_task(_append_steadily(store, rng, stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUDGET
    while killer.kills < KILLS and loop.time() < deadline:
        await killer.kill_leader()
    stop.set()
    await appender
    return await store.head_position()


async def _single_pass(
    store: SQLiteEventStore, model: ReadModel, projection: Any, head: int
) -> None:
    async with ProjectionRunner(store, model, [projection]) as runner:
        await runner.wait_for(head, timeout=60)


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
async def test_read_model_equals_a_clean_pass_after_repeated_sigkills(
    backend: str, tmp_path: Path
) -> None:
    made, name, path = harness(backend, tmp_path), f"f{uuid.uuid4().hex[:8]}", tmp_path / "ev.db"
    model, clean, projection = await made.make(), await made.make(), counter(backend, name)
    killer = _Killer(backend, model, path, name, seed=7)
    try:
        async with SQLiteEventStore(path, synchronous="NORMAL") as store:
            head = await _kill_repeatedly(killer, store, random.Random(20_240_605))
            await killer.aclose()
            await killer.start("a")  # one runner finishes the job
            await asyncio.wait_for(_caught_up(model, name, head), timeout=60)
            await killer.aclose()
            await _single_pass(store, clean, projection, head)
            faulty, single = (
                await made.counts(model, projection),
                await made.counts(clean, projection),
            )
            expected = await _expected(store)
    finally:
        await killer.aclose()
        await made.aclose()
    assert killer.kills >= MIN_KILLS
    assert killer.mid_commit > 0
    assert faulty == single == expected
