"""The tableless outbox end to end: the generic relay (and the CLI) into the SQLite broker."""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from tests.outbox.wal_support import POSTGRES_URL, event, new_slot, sources

from tidings.adapters.postgres import outbox_wal
from tidings.adapters.postgres.outbox_wal import PostgresWalOutboxSource
from tidings.adapters.sqlite.broker import SQLiteBroker
from tidings.events import Event
from tidings.outbox.relay import Relay
from tidings.testing.faults import start_worker

pytestmark = pytest.mark.postgres

TOPICS = ("orders", "payments")
AGGREGATES = 5


@pytest.fixture
async def slot() -> AsyncIterator[str]:
    name = new_slot()
    async with sources(name) as made:
        made.append(await PostgresWalOutboxSource(POSTGRES_URL, slot=name).open())
        await made[0].aclose()  # the slot exists, nobody reads it yet
        yield name


async def write_transactions(count: int) -> list[Event]:
    """Commit ``count`` transactions of two events each (two topics, a few aggregates)."""
    written: list[Event] = []
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        for number in range(count):
            for topic in TOPICS:
                item = event(len(written), aggregate=f"{topic}-{number % AGGREGATES}")
                await outbox_wal.add(conn, item, topic=topic)
                written.append(item)
            await conn.commit()
    return written


async def stored(broker: SQLiteBroker, topic: str) -> list[Event]:
    """Return every event of a topic, partition by partition, each in offset order."""
    info = await broker.describe_topic(topic)
    assert info is not None
    found: list[Event] = []
    for partition in range(info.partitions):
        for message in await broker.read_partition(topic, partition, limit=10_000):
            assert message.event is not None
            found.append(message.event)
    return found


async def assert_relayed_once_in_order(path: Path, written: list[Event]) -> None:
    async with SQLiteBroker(path) as broker:
        relayed = [item for topic in TOPICS for item in await stored(broker, topic)]
    assert sorted(item.id for item in relayed) == sorted(item.id for item in written)
    per_aggregate: dict[str, list[int]] = defaultdict(list)
    for item in relayed:
        assert item.subject is not None
        per_aggregate[item.subject].append(item.data["n"])  # type: ignore[index]
    assert all(numbers == sorted(numbers) for numbers in per_aggregate.values())


async def test_relay_moves_committed_messages_to_the_broker(slot: str, tmp_path: Path) -> None:
    written = await write_transactions(10)
    async with (
        PostgresWalOutboxSource(POSTGRES_URL, slot=slot) as source,
        SQLiteBroker(tmp_path / "broker.db") as broker,
    ):
        assert await Relay(source, broker, batch_size=3).drain() == len(written)
    await assert_relayed_once_in_order(tmp_path / "broker.db", written)


@pytest.mark.slow
async def test_relay_killed_mid_batch_loses_nothing(slot: str, tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    written = await write_transactions(30)
    worker = await start_worker(
        "tests.outbox.wal_relay_worker", slot, str(path), "8", "3", name="wal-relay"
    )
    try:
        await worker.wait_for("hang", timeout=60)  # batch 2: its first topic published only
        assert worker.kill()
        await worker.wait(timeout=30)
    finally:
        await worker.aclose()
    async with (
        PostgresWalOutboxSource(POSTGRES_URL, slot=slot) as source,
        SQLiteBroker(path) as broker,
    ):
        for _ in range(600):  # the killed relay's session is ending
            if await source.activate():
                break
            await asyncio.sleep(0.05)
        relayed = await Relay(source, broker, batch_size=8).drain()
    assert relayed == len(written) - 8  # batch 1 was marked; batch 2 comes again, whole
    await assert_relayed_once_in_order(path, written)


@pytest.mark.slow
async def test_cli_relay_drains_the_wal_outbox(slot: str, tmp_path: Path) -> None:
    written = await write_transactions(5)
    path = tmp_path / "broker.db"
    url = f"{POSTGRES_URL}?source=wal&slot={slot}"
    command = ["-c", "from tidings.cli import main; main()", "outbox", "relay", url]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        f"sqlite:///{path}",
        "--drain",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert f"relayed {len(written)} message(s)" in out.decode()
    await assert_relayed_once_in_order(path, written)
