"""What only the SQLite store promises: group commit, cross-process wake-ups, durability setting."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from tidings import Event
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.errors import ConfigurationError
from tidings.eventstore import open_event_store

APPEND_FROM_ANOTHER_PROCESS = """
import asyncio, sys
from tidings import Event
from tidings.adapters.sqlite.eventstore import SQLiteEventStore

async def main():
    async with SQLiteEventStore(sys.argv[1]) as store:
        await store.append("remote", [Event(type="remote.wrote", source="/p")])

asyncio.run(main())
"""


def _event(n: int) -> Event:
    return Event(type="t.happened", source="/test", data={"n": n})


async def test_concurrent_single_appends_share_commits(tmp_path: Path) -> None:
    commits = 0

    def count() -> None:
        nonlocal commits
        commits += 1

    async with SQLiteEventStore(tmp_path / "g.db") as store:
        store.before_commit = count
        await asyncio.gather(*(store.append(f"s-{i}", [_event(i)]) for i in range(200)))
        assert await store.head_position() == 200
    assert commits < 200 / 4, f"200 appends took {commits} commits: no grouping"


async def test_one_failing_request_in_a_group_fails_alone(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "f.db") as store:
        await store.append("taken", [_event(0)])
        results = await asyncio.gather(
            *(store.append(f"free-{i}", [_event(i)]) for i in range(20)),
            store.append("taken", [_event(1)], expected_version=0),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, Exception)]
        assert len(failures) == 1
        assert await store.head_position() == 21


async def test_subscriber_wakes_when_another_process_appends(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    async with SQLiteEventStore(path) as store:
        await store.append("local", [_event(0)])
        seen: asyncio.Queue[float] = asyncio.Queue()

        async def follow() -> None:
            async for _ in store.subscribe(after_position=1):
                await seen.put(time.perf_counter())

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.2)  # the subscriber is live and waiting
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", APPEND_FROM_ANOTHER_PROCESS, str(path)
        )
        assert await proc.wait() == 0
        committed = time.perf_counter()
        woke = await asyncio.wait_for(seen.get(), timeout=5)
        task.cancel()
        # The poller looks every 20 ms; allow generous slack on a loaded CI machine.
        assert woke - committed < 0.25


async def test_durability_is_full_by_default(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "d.db") as store:
        level = await store._writer.run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    assert level == 2  # FULL


async def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "w.db") as store:
        await store.append("s", [_event(1)])
    mode = sqlite3.connect(tmp_path / "w.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_two_processes_append_with_dense_positions(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    script = APPEND_FROM_ANOTHER_PROCESS.replace(
        'await store.append("remote", [Event(type="remote.wrote", source="/p")])',
        'await asyncio.gather(*(store.append(f"r{i}", [Event(type="r", source="/p")])'
        " for i in range(100)))",
    )
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(path))
        for _ in range(3)
    ]
    assert [await p.wait() for p in procs] == [0, 0, 0]
    async with SQLiteEventStore(path) as store:
        positions = [r.position for r in await store.read_all()]
        assert positions == list(range(1, 301))
        assert (await store.verify()).ok


def test_url_forms_resolve_to_paths(tmp_path: Path) -> None:
    assert SQLiteEventStore("sqlite:///rel/x.db").path == Path("rel/x.db")
    assert SQLiteEventStore(f"sqlite:///{tmp_path}/x.db").path == tmp_path / "x.db"
    assert isinstance(open_event_store(f"sqlite:///{tmp_path}/y.db"), SQLiteEventStore)


def test_url_with_a_host_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no host"):
        SQLiteEventStore("sqlite://somehost/x.db")
