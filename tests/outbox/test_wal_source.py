"""The tableless outbox on the shared PostgreSQL (wal_level=logical): writer and source."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql
from tests.outbox.wal_support import (
    POSTGRES_URL,
    event,
    new_slot,
    numbers,
    sources,
    write,
)

from tidings.adapters.postgres import outbox_wal
from tidings.adapters.postgres.outbox_wal import PostgresWalOutboxSource
from tidings.errors import BackendError, ConfigurationError
from tidings.outbox.ports import OutboxSource

pytestmark = pytest.mark.postgres

Made = list[PostgresWalOutboxSource]


@pytest.fixture
def slot() -> str:
    return new_slot()


@pytest.fixture
async def opened(slot: str) -> AsyncIterator[Made]:
    async with sources(slot) as made:
        yield made


async def source_on(made: Made, slot: str, **options: object) -> PostgresWalOutboxSource:
    source = PostgresWalOutboxSource(POSTGRES_URL, slot=slot, **options)  # type: ignore[arg-type]
    made.append(source)
    return await source.open()


async def test_source_is_an_outbox_source(opened: Made, slot: str) -> None:
    assert isinstance(await source_on(opened, slot), OutboxSource)


async def test_committed_message_is_fetched_with_its_fields(opened: Made, slot: str) -> None:
    source = await source_on(opened, slot)
    written = event(1).replace(data=b"\x00raw")
    await write([written], topic="orders", key="k-1", aggregate_type="order", aggregate_id="o-1")
    [message] = await source.fetch(10)
    assert message.event == written.replace(partitionkey="k-1")
    assert (message.topic, message.key) == ("orders", "k-1")
    assert (message.aggregate_type, message.aggregate_id) == ("order", "o-1")
    assert message.occurred_at == written.time  # when the event happened, as for rows


async def test_rolled_back_message_is_never_fetched(opened: Made, slot: str) -> None:
    source = await source_on(opened, slot)
    await write([event(1)], commit=False)
    await write([event(2)])
    assert numbers(await source.fetch(10)) == [2]


async def test_messages_come_in_commit_order_when_a_transaction_commits_late(
    opened: Made, slot: str
) -> None:
    source = await source_on(opened, slot)
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as late:
        await outbox_wal.add(late, event(1), topic="orders")  # written first...
        await write([event(2), event(3)])
        await late.commit()  # ...committed last
    await write([event(4)])
    assert numbers(await source.fetch(10)) == [2, 3, 1, 4]


async def test_fetch_is_not_consume_a_new_reader_reads_unmarked_messages_again(
    opened: Made, slot: str
) -> None:
    first = await source_on(opened, slot)
    await write([event(1)])
    await write([event(2)])
    assert numbers(await first.fetch(10)) == [1, 2]
    await first.aclose()  # as if it crashed before marking
    second = await source_on(opened, slot)
    assert numbers(await second.fetch(10)) == [1, 2]


async def test_marked_messages_are_not_read_by_a_new_reader(opened: Made, slot: str) -> None:
    first = await source_on(opened, slot)
    await write([event(1)])
    await write([event(2)])
    await first.mark_relayed(await first.fetch(1))
    await first.aclose()
    second = await source_on(opened, slot)
    assert numbers(await second.fetch(10)) == [2]


async def test_fetch_skips_what_is_out_and_returns_what_follows(opened: Made, slot: str) -> None:
    source = await source_on(opened, slot)
    await write([event(1)])
    await write([event(2)])
    assert numbers(await source.fetch(1)) == [1]
    assert numbers(await source.fetch(1)) == [2]
    assert await source.fetch(1) == []


async def test_marking_out_of_commit_order_keeps_the_earlier_transaction(
    opened: Made, slot: str
) -> None:
    first = await source_on(opened, slot)
    await write([event(1)])
    await write([event(2)])
    one, two = await first.fetch(1), await first.fetch(1)
    await first.mark_relayed(two)  # the slot cannot move past 1, which is still out
    await first.aclose()
    second = await source_on(opened, slot)
    assert numbers(await second.fetch(10)) == [1, 2]
    assert one  # fetched and never marked: read again, as the contract says


async def test_marking_the_rest_moves_the_slot_past_all_of_it(opened: Made, slot: str) -> None:
    first = await source_on(opened, slot)
    await write([event(1)])
    await write([event(2)])
    one, two = await first.fetch(1), await first.fetch(1)
    await first.mark_relayed(two)
    await first.mark_relayed(one)
    await first.aclose()
    second = await source_on(opened, slot)
    assert await second.fetch(10) == []


async def test_released_transaction_is_fetched_again_whole(opened: Made, slot: str) -> None:
    source = await source_on(opened, slot)
    await write([event(1), event(2)])
    batch = await source.fetch(10)
    await source.release(batch[:1])
    assert numbers(await source.fetch(10)) == [1, 2]


async def test_fetch_never_splits_a_transaction(opened: Made, slot: str) -> None:
    source = await source_on(opened, slot)
    await write([event(1), event(2), event(3)])
    await write([event(4)])
    await write([event(5)])
    assert numbers(await source.fetch(2)) == [1, 2, 3]  # one transaction larger than the limit
    assert numbers(await source.fetch(2)) == [4, 5]


async def test_second_source_on_a_slot_is_a_standby_until_the_first_closes(
    opened: Made, slot: str
) -> None:
    first = await source_on(opened, slot)
    standby = await source_on(opened, slot)
    await write([event(1)])
    assert (await first.activate(), await standby.activate()) == (True, False)
    assert await standby.fetch(10) == []
    assert numbers(await first.fetch(10)) == [1]
    await first.aclose()
    assert numbers(await standby.fetch(10)) == [1]
    assert standby.active


async def test_messages_of_other_prefixes_are_skipped(opened: Made, slot: str) -> None:
    source = await source_on(opened, slot)
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        await conn.execute("SELECT pg_logical_emit_message(true, 'someone.else', 'x'::bytea)")
        other = outbox_wal.PostgresWalOutbox(prefix="another.outbox")
        await other.add(conn, event(1), topic="orders")
        await conn.commit()
    await write([event(2)])
    assert numbers(await source.fetch(10)) == [2]


async def test_source_reads_only_its_own_prefix(opened: Made, slot: str) -> None:
    source = await source_on(opened, slot, prefix="another.outbox")
    await write([event(1)])
    await write([event(2)], prefix="another.outbox")
    assert numbers(await source.fetch(10)) == [2]


async def test_status_counts_the_backlog_and_its_age(opened: Made, slot: str) -> None:
    source = await source_on(opened, slot)
    await write([event(1), event(2)])
    await write([event(3)])
    status = await source.status()
    assert status.backlog == 3
    assert status.oldest is not None
    await source.mark_relayed(await source.fetch(10))
    assert (await source.status()).backlog == 0


async def test_idle_fetch_moves_the_slot_past_wal_with_nothing_for_it(
    opened: Made, slot: str
) -> None:
    source = await source_on(opened, slot)
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        for _ in range(20):
            await conn.execute("SELECT pg_logical_emit_message(true, 'someone.else', 'x'::bytea)")
        written = await (await conn.execute("SELECT pg_current_wal_lsn()::text")).fetchone()
        assert await source.fetch(10) == []
        query = "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
        moved = await (
            await conn.execute(query + " WHERE slot_name = %s", (*written, slot))
        ).fetchone()
    assert moved == (True,)


async def test_wait_returns_when_a_writer_commits(opened: Made, slot: str) -> None:
    source = await source_on(opened, slot)
    source.min_poll = source.max_poll = 30.0  # only the NOTIFY can end the wait early
    await asyncio.sleep(0.2)  # the listener connects
    started = time.monotonic()
    waiting = asyncio.create_task(source.wait(30.0))
    await asyncio.sleep(0.1)
    await write([event(1)])
    await asyncio.wait_for(waiting, 20.0)
    assert time.monotonic() - started < 20.0


async def test_drop_removes_the_slot_and_create_makes_it_again(opened: Made, slot: str) -> None:
    source = await source_on(opened, slot)
    assert await source.drop()
    with pytest.raises(ConfigurationError, match="does not exist"):
        await source.slot_status()
    assert await source.create()
    assert not await source.create()
    assert (await source.slot_status()).slot == slot


async def test_status_does_not_take_the_slot(opened: Made, slot: str) -> None:
    relay = await source_on(opened, slot)
    watcher = await source_on(opened, slot)
    await write([event(1)])
    assert numbers(await relay.fetch(10)) == [1]
    await write([event(2)])
    assert ((await watcher.status()).backlog, watcher.active, relay.active) == (2, False, True)


async def test_sources_opening_at_once_create_one_slot(opened: Made, slot: str) -> None:
    await asyncio.gather(*(source_on(opened, slot) for _ in range(3)))
    await write([event(1)])
    assert sorted([await source.activate() for source in opened]) == [False, False, True]


async def test_source_without_create_needs_an_existing_slot(opened: Made, slot: str) -> None:
    watcher = await source_on(opened, slot, create=False)
    with pytest.raises(BackendError, match="does not exist"):
        await watcher.status()


def test_slot_and_mark_table_are_named_by_the_url_when_not_given() -> None:
    source = PostgresWalOutboxSource(
        f"{POSTGRES_URL}?slot=from_url&connect_timeout=5&mark_table=app.marks"
    )
    assert (source.slot, source.url) == ("from_url", f"{POSTGRES_URL}?connect_timeout=5")
    assert source.mark_table == "app.marks"
    assert PostgresWalOutboxSource(POSTGRES_URL).slot == outbox_wal.DEFAULT_SLOT


@pytest.mark.parametrize("name", ["Upper", "has-dash", "x" * 64])
def test_slot_names_are_checked(name: str) -> None:
    with pytest.raises(ConfigurationError, match="slot name"):
        PostgresWalOutboxSource(POSTGRES_URL, slot=name)


@pytest.fixture
async def mark_table() -> AsyncIterator[str]:
    name = f"tidings_test_wal_marks_{new_slot()[-16:]}"
    yield name
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


async def marked_and_confirmed(slot: str, table: str) -> tuple[object, object]:
    """Return the slot's position in the mark table and its confirmed position."""
    query = sql.SQL(
        "SELECT (SELECT lsn FROM {} WHERE slot = %(slot)s),"
        " (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %(slot)s)"
    ).format(sql.Identifier(table))
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        row = await (await conn.execute(query, {"slot": slot})).fetchone()
    assert row is not None
    return row[0], row[1]


async def test_mark_table_holds_the_position_the_slot_was_marked_to(
    opened: Made, slot: str, mark_table: str
) -> None:
    source = await source_on(opened, slot, mark_table=mark_table)
    await write([event(1)])
    await write([event(2)])
    await source.mark_relayed(await source.fetch(1))
    marked, confirmed = await marked_and_confirmed(slot, mark_table)
    assert marked is not None
    assert marked == confirmed
    await source.mark_relayed(await source.fetch(1))
    assert (await marked_and_confirmed(slot, mark_table))[0] > marked  # type: ignore[operator]


async def test_mark_table_is_not_written_when_nothing_was_marked(
    opened: Made, slot: str, mark_table: str
) -> None:
    source = await source_on(opened, slot, mark_table=mark_table)
    await write([event(1)], prefix="another.outbox")
    assert await source.fetch(10) == []  # the slot moves past WAL with nothing for it
    assert (await marked_and_confirmed(slot, mark_table))[0] is None


async def test_drop_forgets_the_slot_in_the_mark_table(
    opened: Made, slot: str, mark_table: str
) -> None:
    source = await source_on(opened, slot, mark_table=mark_table)
    await write([event(1)])
    await source.mark_relayed(await source.fetch(10))
    await source.drop()
    assert await marked_and_confirmed(slot, mark_table) == (None, None)


@pytest.mark.parametrize("name", ["a.b.c", "has-dash", "public.", "1table"])
def test_mark_table_names_are_checked(name: str) -> None:
    with pytest.raises(ConfigurationError, match="mark table"):
        PostgresWalOutboxSource(POSTGRES_URL, mark_table=name)
