"""What the SQLite broker does beyond the conformance suite: several processes on one file,
group commit, settlements queued or awaited, the retention job, the URL.

Run as a module (``python -m tests.messaging.test_sqlite_broker URL TOPIC GROUP SECONDS``),
this file is also the consumer process of the cross-process cases: it prints ``got <event id>``
for each delivery, works ``SECONDS`` on it and acks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tidings.adapters.sqlite import broker_commit
from tidings.adapters.sqlite.broker import SQLiteBroker
from tidings.events import Event
from tidings.messaging import Retention, open_broker
from tidings.testing.faults import READY, say, start_worker

SOURCE = "/tests/sqlite-broker"
WORKER = "tests.messaging.test_sqlite_broker"


def _events(count: int, key: str | None = None) -> list[Event]:
    return [
        Event(type="t.tested", source=SOURCE, data={"n": n}, partitionkey=key) for n in range(count)
    ]


def _count(path: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(sql).fetchone()[0])


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "broker.db"


@pytest.fixture
async def broker(path: Path) -> AsyncIterator[SQLiteBroker]:
    async with SQLiteBroker(path) as opened:
        yield opened


@pytest.fixture
def topic() -> str:
    return f"topic-{uuid.uuid4().hex[:12]}"


async def _eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - another process changes what it looks at
            await asyncio.sleep(0.05)


async def _take(subscription: AsyncIterator[object], count: int, timeout: float = 10.0) -> list:
    async with asyncio.timeout(timeout):
        return [await anext(subscription) for _ in range(count)]


async def test_open_broker_with_a_sqlite_url_opens_that_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'via-url.db'}"
    async with open_broker(url) as broker:
        assert isinstance(broker, SQLiteBroker)
        await broker.publish("orders", _events(1))
    assert _count(tmp_path / "via-url.db", "SELECT COUNT(*) FROM tidings_messages") == 1


async def test_a_second_broker_on_the_file_receives_what_the_first_publishes(
    broker: SQLiteBroker, path: Path, topic: str
) -> None:
    async with SQLiteBroker(path) as other, other.subscribe(topic, group="g") as subscription:
        await subscription.join()
        started = time.monotonic()
        await broker.publish(topic, _events(3, key="k"))
        got = await _take(subscription, 3)
        assert [d.event.data["n"] for d in got] == [0, 1, 2]
        assert time.monotonic() - started < 1.0  # woken by the data_version poll, not a timeout


async def test_processes_in_one_group_share_the_work_without_duplicates(
    broker: SQLiteBroker, path: Path, topic: str
) -> None:
    await broker.create_topic(topic, partitions=4)
    url, workers = f"sqlite:///{path}", []
    try:
        for _ in range(2):
            workers.append(await start_worker(WORKER, url, topic, "shared", "0.005"))
        await broker.publish(topic, [e for n in range(20) for e in _events(10, key=f"k{n}")])
        await _eventually(lambda: sum(len(_got(w.lines)) for w in workers) >= 200)
    finally:
        for worker in workers:
            await worker.aclose()
    first, second = (_got(w.lines) for w in workers)
    assert first, "the second process got all the work"
    assert second, "the first process got all the work"
    assert len(first) + len(second) == len({*first, *second}) == 200


def _got(lines: list[str]) -> list[str]:
    return [line.split()[1] for line in lines if line.startswith("got ")]


async def test_queued_acks_are_committed_when_the_subscription_closes(
    broker: SQLiteBroker, path: Path, topic: str
) -> None:
    await broker.publish(topic, _events(10, key="k"))
    async with broker.subscribe(topic, group="g") as subscription:
        for delivery in await _take(subscription, 10):
            await delivery.ack()
    assert _count(path, "SELECT COUNT(*) FROM tidings_pending") == 0


async def test_await_acks_commits_before_ack_returns(path: Path, topic: str) -> None:
    async with SQLiteBroker(path, await_acks=True) as broker:
        await broker.publish(topic, _events(1))
        async with broker.subscribe(topic, group="g") as subscription:
            (delivery,) = await _take(subscription, 1)
            assert _count(path, "SELECT COUNT(*) FROM tidings_pending") == 1
            await delivery.ack()
            assert _count(path, "SELECT COUNT(*) FROM tidings_pending") == 0


async def test_concurrent_publishes_share_commits(
    broker: SQLiteBroker, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = []
    real = broker_commit._commit

    def counting(conn: sqlite3.Connection, **kwargs: object) -> list[object]:
        commits.append(1)
        return real(conn, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(broker_commit, "_commit", counting)
    await asyncio.gather(*(broker.publish(topic, [event]) for event in _events(200)))
    assert len(commits) < 50


async def test_publish_waits_for_another_writer_instead_of_failing(
    broker: SQLiteBroker, path: Path, topic: str
) -> None:
    await broker.create_topic(topic)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        publishing = asyncio.create_task(broker.publish(topic, _events(1)))
        await asyncio.sleep(0.3)
        assert not publishing.done()
        holder.execute("COMMIT")
    assert len(await publishing) == 1


async def test_the_retention_job_runs_while_the_broker_is_open(path: Path, topic: str) -> None:
    broker = SQLiteBroker(path)
    broker.retention_interval = 0.05
    async with broker:
        await broker.create_topic(topic, partitions=1, retention=Retention(max_count=2))
        await broker.publish(topic, _events(5))
        await _eventually(lambda: _count(path, "SELECT COUNT(*) FROM tidings_messages") <= 2)


async def test_retention_by_age_keeps_topics_without_a_rule(
    broker: SQLiteBroker, path: Path, topic: str
) -> None:
    aged = Retention(max_age=timedelta(milliseconds=1))
    await broker.create_topic(topic, partitions=1, retention=aged)
    await broker.publish(topic, _events(3))
    await broker.publish("kept-forever", _events(3))
    await asyncio.sleep(0.01)
    assert await broker.enforce_retention() == 3
    assert _count(path, "SELECT COUNT(*) FROM tidings_messages") == 3


async def test_a_topic_keeps_its_retention_across_a_restart(path: Path, topic: str) -> None:
    rule = Retention(max_age=timedelta(hours=1), max_count=7)
    async with SQLiteBroker(path) as broker:
        await broker.create_topic(topic, partitions=2, retention=rule)
    async with SQLiteBroker(path) as broker:
        info = await broker.create_topic(topic, partitions=5)
    assert (info.partitions, info.retention) == (2, rule)


async def test_a_malformed_envelope_row_goes_to_the_dead_letter_topic(
    broker: SQLiteBroker, topic: str
) -> None:
    await broker.publish_raw(topic, b'{"type": "x"}', key="k")
    async with (
        broker.subscribe(topic + ".dlq", group="d") as dead,
        broker.subscribe(topic, group="g") as subscription,
    ):
        await subscription.join()
        reading = asyncio.create_task(anext(subscription))
        (letter,) = await _take(dead, 1)
        reading.cancel()
    assert letter.event.type == "tidings.malformed"
    assert letter.key == "k"


async def _consume_forever(url: str, topic: str, group: str, seconds: str) -> None:
    async with open_broker(url) as broker, broker.subscribe(topic, group=group) as subscription:  # type: ignore[attr-defined]
        await subscription.join()
        say(READY)
        async for delivery in subscription:
            say(f"got {delivery.event.id}")
            await asyncio.sleep(float(seconds))  # the work
            await delivery.ack()


if __name__ == "__main__":
    asyncio.run(_consume_forever(*sys.argv[1:5]))
