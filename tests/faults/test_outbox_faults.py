"""The outbox under faults: relays SIGKILLed and restarted at random, the broker restarted.

For 15 s a business process writes orders, a fifth of them rolled back, and kills itself once
right after a commit (then a new one takes over); two relays publish the outbox to a private
JetStream server, which is SIGKILLed twice and restarted 2.5 s later (publishes time out
meanwhile). A relay's publishes take 20 ms longer than the broker needs (a slow link), and a
relay says so on stdout as one starts. Every 0.05-0.2 s, the first relay to start a publish
within the next 1.5 s (else one at random) is SIGKILLed and started again: most kills land
inside a publish, after the batch was fetched and before it is marked. At the end every
committed order has exactly one event on the topic (after dedup by event id) and no
rolled-back order has one. A relay that marks a batch before publishing it loses that batch
at such a kill: that relay fails this test on both databases (tried by hand).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.outbox.fault_support import Outcome, PrivateNats, committed_orders, topic_events
from tests.outbox.fault_worker import PUBLISHING

from tidings.outbox.sources import open_source
from tidings.testing.faults import Worker, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKER = "tests.outbox.fault_worker"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
WRITING_SECONDS = 15.0


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[PrivateNats]:
    server = PrivateNats(tmp_path / "jetstream")
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shop.db'}"
        return
    import psycopg

    schema = f"outbox_fault_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_URL}#{schema}"
    finally:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def write_orders(mode: str, db: str, broker_url: str, seconds: float, seed: int) -> int:
    """Run business processes for ``seconds`` (a new one whenever one dies); return how many."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    started = 0
    while loop.time() < deadline:
        args = ("business", mode, db, broker_url, str(seed + started), "100000")
        worker = await start_worker(WORKER, *args, name=f"business-{started}")
        started += 1
        try:
            await worker.wait(timeout=max(deadline - loop.time(), 0.01))
        except TimeoutError:
            pass
        finally:
            await worker.aclose()
    return started


async def backlog(db: str) -> int:
    url, _, schema = db.partition("#")
    source = open_source(url, **({"schema": schema} if schema else {}))
    async with source:  # type: ignore[attr-defined]
        return (await source.status()).backlog


async def drained(db: str) -> None:
    """Return once the outbox has no backlog (within 40 s)."""
    async with asyncio.timeout(40):
        while await backlog(db):  # noqa: ASYNC110 (another process empties it)
            await asyncio.sleep(0.2)


async def first_to_publish(relays: list[Worker], within: float) -> int | None:
    """Return the index of the first relay to start a publish within ``within`` seconds."""
    seen = [len(relay.lines) for relay in relays]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        for index, relay in enumerate(relays):
            if PUBLISHING in relay.lines[seen[index] :]:
                return index
        await asyncio.sleep(0.001)  # well inside the 20 ms a publish takes
    return None


async def restart_broker(nats: PrivateNats, at: tuple[float, ...], down_for: float) -> None:
    """SIGKILL the broker ``at`` these seconds from now and restart it ``down_for`` s later."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    for moment in at:
        await asyncio.sleep(max(began + moment - loop.time(), 0))
        await asyncio.to_thread(nats.restart, down_for)


async def chaos(db: str, nats: PrivateNats, stop: asyncio.Event, seed: int) -> tuple[int, int]:
    """Keep two relays running, killing one (mid-publish when one publishes) while the broker
    is restarted twice. Return (kills, kills inside a publish)."""
    chance = random.Random(seed)
    relays: list[Worker] = [await start_worker(WORKER, "relay", db, nats.url) for _ in range(2)]
    restarts = asyncio.create_task(restart_broker(nats, at=(2.5, 5.5), down_for=2.5))
    kills = mid_publish = 0
    try:
        while not stop.is_set():
            await asyncio.sleep(chance.uniform(0.05, 0.2))
            for index, relay in enumerate(relays):
                if relay.returncode is not None:  # ended by itself (no broker as it started)
                    await relay.aclose()
                    relays[index] = await start_worker(WORKER, "relay", db, nats.url, ready=None)
            publishing = await first_to_publish(relays, within=1.5)
            victim = chance.randrange(len(relays)) if publishing is None else publishing
            relays[victim].kill()
            await relays[victim].aclose()
            kills += 1
            mid_publish += publishing is not None
            # Not waiting for it to get ready: it may be killed again while it starts.
            relays[victim] = await start_worker(WORKER, "relay", db, nats.url, ready=None)
        await restarts
    finally:
        restarts.cancel()
        for relay in relays:
            await relay.aclose()
    return kills, mid_publish


async def test_every_committed_order_has_exactly_one_event_despite_kills(
    database: str, nats: PrivateNats
) -> None:
    stop = asyncio.Event()
    chaos_task = asyncio.create_task(chaos(database, nats, stop, seed=7))
    businesses = await write_orders("outbox", database, nats.url, WRITING_SECONDS, seed=11)
    stop.set()
    kills, mid_publish = await chaos_task
    final = await start_worker(WORKER, "relay", database, nats.url)
    try:
        await drained(database)
    finally:
        await final.aclose()
    committed = await committed_orders(database)
    outcome = Outcome(committed, await topic_events(nats.url, len(committed)))
    assert businesses >= 2
    assert kills >= 8
    assert mid_publish >= 3
    assert len(committed) > 50
    print(
        f"{len(committed)} committed, {kills} relay kills ({mid_publish} inside a publish),"
        f" {businesses} business processes"
    )
    assert outcome.lost == set()
    assert outcome.phantom == set()
    assert outcome.repeated == set()
