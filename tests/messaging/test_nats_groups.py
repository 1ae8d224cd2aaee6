"""JetStream mechanics behind `NatsBroker`'s groups: leases, attempts, retention, replay.

Needs NATS JetStream on 127.0.0.1:4222 (``scripts/services``); skipped without it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from tidings.adapters.nats import NatsBroker
from tidings.messaging.ports import HEADER_REASON, Delivery, Retention, dead_letter_topic
from tidings.messaging.subscription import MALFORMED_TYPE

from .nats_service import restart_nats_server
from .test_nats_broker import URL, _events, _take, _topic, needs_nats

pytestmark = [needs_nats, pytest.mark.nats]


@pytest.fixture
async def broker() -> AsyncIterator[NatsBroker]:
    created = NatsBroker(URL, fsync_ack_warning=False)
    async with created:
        yield created
        for info in created._catalog.known():
            with contextlib.suppress(Exception):
                await created.delete_topic(info.name)


async def test_publishing_an_event_twice_stores_it_once(broker: NatsBroker) -> None:
    topic, events = _topic(), _events(3, keys=3)
    first = await broker.publish(topic, events)
    again = await broker.publish(topic, events)
    assert [r.duplicate for r in again] == [True] * 3
    assert [(r.partition, r.offset) for r in again] == [(r.partition, r.offset) for r in first]


async def test_keyless_events_land_where_their_id_already_is(broker: NatsBroker) -> None:
    topic = _topic()
    events = [e.replace(partitionkey=None) for e in _events(8)]
    first = await broker.publish(topic, events)
    again = await broker.publish(topic, events)
    assert all(r.duplicate for r in again)
    assert len({r.partition for r in first}) > 1  # spread by id, not all on one partition


async def test_two_members_share_partitions_and_keep_each_keys_order(broker: NatsBroker) -> None:
    topic = _topic()
    await broker.create_topic(topic, partitions=4)
    async with (
        broker.subscribe(topic, group="g", ack_deadline=5) as one,
        broker.subscribe(topic, group="g", ack_deadline=5) as two,
    ):
        await asyncio.sleep(1.0)  # let the members settle on two partitions each
        await broker.publish(topic, _events(200, keys=16))
        seen: dict[str, list[tuple[str, int]]] = {}

        async def drain(name: str, sub: AsyncIterator[Delivery]) -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    async for delivery in sub:
                        seen.setdefault(delivery.key or "", []).append((name, delivery.offset))
                        await delivery.ack()

        await asyncio.gather(drain("one", one), drain("two", two))
    assert sum(len(v) for v in seen.values()) == 200
    assert {name for per_key in seen.values() for name, _ in per_key} == {"one", "two"}
    for per_key in seen.values():
        assert len({name for name, _ in per_key}) == 1
        offsets = [offset for _, offset in per_key]
        assert offsets == sorted(offsets)


async def test_prefetched_deliveries_nobody_saw_do_not_count_as_attempts(
    broker: NatsBroker,
) -> None:
    topic = _topic()
    await broker.publish(topic, _events(20))
    async with broker.subscribe(topic, group="g", prefetch=16) as sub:
        await _take(sub, 2)
    async with (
        NatsBroker(URL, fsync_ack_warning=False) as other,
        other.subscribe(topic, group="g") as sub,
    ):
        rest = await _take(sub, 18)
    assert [d.attempt for d in rest] == [1] * 18


async def test_nack_with_delay_comes_back_later_as_the_next_attempt(broker: NatsBroker) -> None:
    topic = _topic()
    await broker.publish(topic, _events(1))
    async with broker.subscribe(topic, group="g") as sub:
        [first] = await _take(sub, 1, ack=False)
        await first.nack(delay=0.5)
        started = asyncio.get_running_loop().time()
        [again] = await _take(sub, 1)
    assert again.attempt == 2
    assert asyncio.get_running_loop().time() - started >= 0.4


async def test_extend_keeps_a_delivery_past_its_deadline(broker: NatsBroker) -> None:
    topic = _topic()
    await broker.publish(topic, _events(2))
    async with broker.subscribe(topic, group="g", ack_deadline=1.0) as sub:
        [held] = await _take(sub, 1, ack=False)
        await held.extend(3.0)
        await _take(sub, 1)  # the second event
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2.0):
                await anext(sub)
        await held.ack()


async def test_reject_moves_the_event_to_the_dead_letter_topic(broker: NatsBroker) -> None:
    topic = _topic()
    [event] = _events(1)
    await broker.publish(topic, [event])
    async with broker.subscribe(topic, group="g") as sub:
        [delivery] = await _take(sub, 1, ack=False)
        await delivery.reject("no good")
    async with broker.subscribe(dead_letter_topic(topic), group="dlq") as dead:
        [letter] = await _take(dead, 1)
    assert letter.event == event
    assert letter.headers[HEADER_REASON] == "no good"


async def test_a_payload_that_is_not_an_event_goes_to_the_dead_letter_topic(
    broker: NatsBroker,
) -> None:
    topic = _topic()
    await broker.publish_raw(topic, b"not json", key="k")
    await broker.publish(topic, _events(1))
    async with broker.subscribe(topic, group="g") as sub:
        [good] = await _take(sub, 1)
    assert good.event.type == "t"
    async with broker.subscribe(dead_letter_topic(topic), group="dlq") as dead:
        [letter] = await _take(dead, 1)
    assert letter.event.type == MALFORMED_TYPE
    assert letter.event.data == b"not json"
    assert letter.headers[HEADER_REASON].startswith("malformed")


async def test_retention_keeps_what_a_group_has_not_settled(broker: NatsBroker) -> None:
    topic = _topic()
    await broker.create_topic(topic, partitions=1, retention=Retention(max_count=2))
    async with broker.subscribe(topic, group="slow") as sub:
        await broker.publish(topic, _events(5))
        await _take(sub, 1)  # settles offset 0 only
        await broker.enforce_retention()
        rest = await _take(sub, 4)
    assert [d.offset for d in rest] == [1, 2, 3, 4]
    await broker.enforce_retention()  # now settled: keep the newest two
    async with broker.subscribe(topic, group="late") as late:
        assert [d.offset for d in await _take(late, 2)] == [3, 4]


async def test_replay_from_an_offset_delivers_again_from_attempt_one(broker: NatsBroker) -> None:
    topic = _topic()
    await broker.create_topic(topic, partitions=1)
    await broker.publish(topic, _events(4))
    async with broker.subscribe(topic, group="g") as sub:
        await _take(sub, 4)
        await broker.replay(topic, group="g", offsets={0: 2})
        again = await _take(sub, 2)
    assert [(d.offset, d.attempt) for d in again] == [(2, 1), (3, 1)]


async def test_replay_since_a_time_starts_at_events_stored_after_it(broker: NatsBroker) -> None:
    topic = _topic()
    await broker.create_topic(topic, partitions=2)
    await broker.publish(topic, _events(3, keys=2))
    await asyncio.sleep(0.2)
    since = datetime.now(UTC) - timedelta(milliseconds=50)
    later = await broker.publish(topic, _events(2, keys=2))
    async with broker.subscribe(topic, group="g") as sub:
        await _take(sub, 5)
        await broker.replay(topic, group="g", since=since)
        again = await _take(sub, 2)
    assert {d.event.id for d in again} == {r.event_id for r in later}


@pytest.mark.slow
async def test_a_member_resumes_after_a_server_restart_and_nothing_is_lost(
    broker: NatsBroker,
) -> None:
    topic = _topic()
    published = await broker.publish(topic, _events(10, keys=4))
    async with broker.subscribe(topic, group="g", ack_deadline=5) as sub:
        acked = {d.event.id for d in await _take(sub, 5)}
        await asyncio.to_thread(restart_nats_server)
        published += await broker.publish(topic, _events(10, keys=4))
        missing = {r.event_id for r in published} - acked
        async with asyncio.timeout(20):
            while missing:
                delivery = await anext(sub)
                missing.discard(delivery.event.id)
                await delivery.ack()
