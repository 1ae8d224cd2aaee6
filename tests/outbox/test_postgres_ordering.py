"""PostgreSQL outbox ordering: late commits, several relays, writers of one aggregate."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from tests.outbox.conftest import POSTGRES_URL, PostgresDb, order_event

from tidings.adapters.postgres.outbox import PostgresOutboxSource

pytestmark = pytest.mark.postgres


def source(db: PostgresDb) -> PostgresOutboxSource:
    return PostgresOutboxSource(POSTGRES_URL, schema=db.schema)


async def test_a_row_that_commits_late_is_fetched_after_later_rows(postgres_db: PostgresDb) -> None:
    slow = await psycopg.AsyncConnection.connect(POSTGRES_URL)
    early = order_event("slow")  # takes the lower seq, commits last
    await postgres_db.writer.add(slow, early, topic="orders")
    late = order_event("fast")
    await postgres_db.write([late])
    async with source(postgres_db) as relay:
        first = await relay.fetch(10)
        assert [m.event.id for m in first] == [late.id]
        await relay.mark_relayed(first)
        await slow.commit()
        await slow.close()
        second = await relay.fetch(10)
        assert [m.event.id for m in second] == [early.id]


async def test_two_relays_never_hold_one_aggregate_at_once(postgres_db: PostgresDb) -> None:
    await postgres_db.write([order_event("a", n) for n in range(3)])
    await postgres_db.write([order_event("b", 0)])
    async with source(postgres_db) as one, source(postgres_db) as two:
        one.shards_per_fetch = 1
        held = await one.fetch(1)
        assert len(held) == 1
        holder = held[0].aggregate_id
        others = await two.fetch(10)
        assert holder not in {m.aggregate_id for m in others}
        await two.release(others)
        await one.mark_relayed(held)
        rest = await two.fetch(10)
        got = [m.event.data for m in rest if m.aggregate_id == holder]
        assert got == sorted(got, key=lambda data: data["n"])  # type: ignore[index]


async def test_writers_of_one_aggregate_commit_in_seq_order(postgres_db: PostgresDb) -> None:
    first = await psycopg.AsyncConnection.connect(POSTGRES_URL)
    second = await psycopg.AsyncConnection.connect(POSTGRES_URL)
    try:
        await postgres_db.writer.add(first, order_event("a", 1), topic="orders")
        blocked = asyncio.create_task(
            postgres_db.writer.add(second, order_event("a", 2), topic="orders")
        )
        await asyncio.sleep(0.3)
        assert not blocked.done()  # waits on the aggregate's lock, before taking a seq
        await first.commit()
        await asyncio.wait_for(blocked, 5)
        await second.commit()
    finally:
        await first.close()
        await second.close()
    async with source(postgres_db) as relay:
        rows = await relay.fetch(10)
    assert [m.event.data for m in rows] == [{"n": 1}, {"n": 2}]
    assert rows[0].position < rows[1].position
