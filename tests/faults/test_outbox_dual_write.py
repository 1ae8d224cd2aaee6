"""Why the outbox: the same business process with naive dual writes loses and invents events.

``commit-then-publish``: the process dies between its commit and its publish (it SIGKILLs
itself right after one chosen commit), so a committed order never gets its event: lost.
``publish-then-commit``: the event is out before the transaction decides, and a fifth of the
transactions roll back, so orders that never existed have events: phantoms. The outbox test
(test_outbox_faults.py) runs the same process, with the same faults and worse, and has neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.faults.test_outbox_faults import write_orders
from tests.outbox.fault_support import Outcome, PrivateNats, committed_orders, topic_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[PrivateNats]:
    server = PrivateNats(tmp_path / "jetstream")
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        server.kill()


async def run_naive(mode: str, directory: Path, nats: PrivateNats) -> Outcome:
    database = f"sqlite:///{directory / 'shop.db'}"
    await write_orders(mode, database, nats.url, 4.0, seed=3)
    committed = await committed_orders(database)
    return Outcome(committed, await topic_events(nats.url, 1))


async def test_commit_then_publish_loses_events_when_the_process_dies_between(
    tmp_path: Path, nats: PrivateNats
) -> None:
    outcome = await run_naive("commit-then-publish", tmp_path, nats)
    assert outcome.committed
    assert outcome.lost  # committed orders whose event was never published
    assert not outcome.phantom


async def test_publish_then_commit_publishes_events_of_rolled_back_orders(
    tmp_path: Path, nats: PrivateNats
) -> None:
    outcome = await run_naive("publish-then-commit", tmp_path, nats)
    assert outcome.committed
    assert outcome.phantom  # events of orders that rolled back
