"""The ``dedupe`` middleware: skipping processed deliveries, with a store or an inbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tidings import App
from tidings.adapters.memory.broker import MemoryBroker
from tidings.adapters.memory.dedup import MemoryDedupStore
from tidings.adapters.sqlite.dedup import SQLiteInbox
from tidings.events import Event
from tidings.messaging.handlers import Context, Outgoing
from tidings.messaging.middleware.dedupe import decode_outbox, dedupe, encode_outbox

from .helpers import context, new_event, sqlite_rows, sqlite_table, until


@pytest.fixture
async def store() -> AsyncIterator[MemoryDedupStore]:
    async with MemoryDedupStore() as opened:
        yield opened


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[SQLiteInbox]:
    path = tmp_path / "shop.db"
    sqlite_table(path, "CREATE TABLE sent (event_id TEXT)")
    async with SQLiteInbox(path) as opened:
        yield opened


class Recorder:
    """A handler that counts its calls; fails while ``failures`` is positive."""

    def __init__(self, failures: int = 0, pause: float = 0.0) -> None:
        self.calls = 0
        self.failures = failures
        self.pause = pause

    async def __call__(self, ctx: Context) -> None:
        self.calls += 1
        await asyncio.sleep(self.pause)
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("handler failed")


async def test_store_skips_a_redelivered_event(store: MemoryDedupStore) -> None:
    handler, event = Recorder(), new_event()
    chain = dedupe(store)(handler)
    for _ in range(3):
        await chain(context(event)[0])
    assert handler.calls == 1
    assert await store.seen(f"g/{event.id}")


async def test_store_runs_again_after_a_failure(store: MemoryDedupStore) -> None:
    handler, event = Recorder(failures=1), new_event()
    chain = dedupe(store)(handler)
    with pytest.raises(RuntimeError):
        await chain(context(event)[0])
    await chain(context(event)[0])
    assert handler.calls == 2


async def test_store_runs_concurrent_duplicates_once(store: MemoryDedupStore) -> None:
    handler, event = Recorder(pause=0.05), new_event()
    chain = dedupe(store, poll=0.01)(handler)
    await asyncio.gather(*(chain(context(event)[0]) for _ in range(5)))
    assert handler.calls == 1


async def test_store_key_derived_from_the_payload(store: MemoryDedupStore) -> None:
    handler = Recorder()
    chain = dedupe(store, key=lambda ctx: ctx.event.data["order"], consumer="sms")(handler)  # type: ignore[index]
    await chain(context(new_event(order="o-1"))[0])
    await chain(context(new_event(order="o-1"))[0])
    assert handler.calls == 1
    assert await store.seen("sms/o-1")


async def test_store_releases_the_key_of_a_rejected_delivery(store: MemoryDedupStore) -> None:
    event = new_event()

    async def rejecting(ctx: Context) -> None:
        await ctx.reject("poison")

    await dedupe(store)(rejecting)(context(event)[0])
    assert not await store.seen(f"g/{event.id}")


async def test_inbox_commits_the_effect_once(inbox: SQLiteInbox) -> None:
    event = new_event()

    async def handler(ctx: Context) -> None:
        inbox.current().execute("INSERT INTO sent VALUES (?)", (ctx.event.id,))

    chain = dedupe(inbox)(handler)
    for attempt in (1, 2, 1):
        await chain(context(event, attempt=attempt)[0])
    assert sqlite_rows(inbox.path, "SELECT event_id FROM sent") == [(event.id,)]


async def test_inbox_rolls_back_a_failed_handler(inbox: SQLiteInbox) -> None:
    event = new_event()

    async def handler(ctx: Context) -> None:
        inbox.current().execute("INSERT INTO sent VALUES (?)", (ctx.event.id,))
        raise RuntimeError("after the write")

    with pytest.raises(RuntimeError):
        await dedupe(inbox)(handler)(context(event)[0])
    assert sqlite_rows(inbox.path, "SELECT * FROM sent") == []
    assert not await inbox.seen(f"g/{event.id}")


async def test_inbox_gives_a_duplicate_the_first_published_events(inbox: SQLiteInbox) -> None:
    event, calls = new_event(), []

    async def handler(ctx: Context) -> None:
        calls.append(ctx.event.id)
        await ctx.publish("sms", Event(type="sms.sent", source="/t", data={"n": len(calls)}))

    chain = dedupe(inbox)(handler)
    first, _ = context(event)
    await chain(first)
    again, delivery = context(event, attempt=2)
    await chain(again)
    assert len(calls) == 1
    assert [o.event for o in again.outbox] == [o.event for o in first.outbox]
    assert delivery.acks == 0  # the router acks, after publishing


async def test_inbox_drops_the_writes_of_a_replayed_duplicate(inbox: SQLiteInbox) -> None:
    event, calls = new_event(), []

    async def handler(ctx: Context) -> None:
        calls.append(ctx.delivery.attempt)
        inbox.current().execute("INSERT INTO sent VALUES (?)", (ctx.event.id,))
        await ctx.publish("sms", Event(type="sms.sent", source="/t", data={"n": len(calls)}))

    chain = dedupe(inbox)(handler)
    first, _ = context(event)
    await chain(first)
    replayed, _ = context(event)  # a replay counts attempts from 1: found at commit
    await chain(replayed)
    assert calls == [1, 1]
    assert sqlite_rows(inbox.path, "SELECT event_id FROM sent") == [(event.id,)]
    assert [o.event for o in replayed.outbox] == [o.event for o in first.outbox]


async def test_inbox_does_not_record_a_rejected_delivery(inbox: SQLiteInbox) -> None:
    event = new_event()

    async def rejecting(ctx: Context) -> None:
        inbox.current().execute("INSERT INTO sent VALUES (?)", (ctx.event.id,))
        await ctx.reject("poison")

    await dedupe(inbox)(rejecting)(context(event)[0])
    assert sqlite_rows(inbox.path, "SELECT * FROM sent") == []
    assert not await inbox.seen(f"g/{event.id}")


def test_outbox_round_trips_through_bytes() -> None:
    outbox = [Outgoing("t", new_event(a=1), "key"), Outgoing("u", new_event(), None)]
    assert decode_outbox(encode_outbox(outbox)) == outbox


def test_empty_outbox_is_stored_as_nothing() -> None:
    assert encode_outbox([]) is None
    assert decode_outbox(None) == []


async def test_app_acks_a_replayed_event_and_keeps_one_effect(inbox: SQLiteInbox) -> None:
    handled: list[str] = []
    async with MemoryBroker() as broker:
        app = App(broker, group="notify", middleware=[dedupe(inbox)])

        @app.handler("orders")
        async def on_event(event: Event) -> None:
            handled.append(event.id)
            inbox.current().execute("INSERT INTO sent VALUES (?)", (event.id,))

        event = new_event()
        await broker.publish("orders", [event], key="o-1")
        async with app.running():
            await until(lambda: app.stats.acked == 1)
            await broker.replay("orders", group="notify", offsets=dict.fromkeys(range(4), 0))
            await until(lambda: app.stats.acked == 2)
    assert handled == [event.id, event.id]  # a replay counts from attempt 1: found at commit
    assert sqlite_rows(inbox.path, "SELECT event_id FROM sent") == [(event.id,)]
