"""Inbox fault test: consumers SIGKILLed at random points, redelivery, one effect per event.

A SQLite broker holds ``EVENTS`` events. Consumer processes (`fault_worker`) run the router
with ``dedupe(inbox)``; each is killed with SIGKILL at a random point: after a random time,
at a commit's last moment, or between a commit and its ack. Then one consumer runs until
every event has its effect. Every event must have exactly one effect row and exactly one
receipt (the receipts of events whose ack was lost come from the inbox's stored outcome).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tidings import Event
from tidings.adapters.sqlite.broker import SQLiteBroker
from tidings.testing.faults import Worker, start_worker

from .conftest import _pg

EVENTS: Final = 300
KILLS: Final = 15
CUES: Final = ("in-commit", "committed", None)

pytestmark = pytest.mark.slow


@dataclass
class Setup:
    """Where one run keeps its broker, inbox and effects."""

    broker: Path
    backend: str
    where: str

    async def effects(self) -> list[tuple[str, int]]:
        query = "SELECT event_id, COUNT(*) FROM {table} GROUP BY event_id"
        if self.backend == "sqlite":
            with sqlite3.connect(self.where) as conn:
                rows = conn.execute(query.format(table="effects")).fetchall()
            conn.close()
            return rows
        return [tuple(r) for r in await _pg(query.format(table=f'"{self.where}".effects'))]  # type: ignore[misc]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    if request.param == "sqlite":
        where = str(tmp_path / "effects.db")
        with sqlite3.connect(where) as conn:
            conn.execute("CREATE TABLE effects (event_id TEXT NOT NULL)")
        conn.close()
    else:
        where = f"t_{uuid.uuid4().hex}"
        await _pg(f'CREATE SCHEMA "{where}"')
        await _pg(f'CREATE TABLE "{where}".effects (event_id TEXT NOT NULL)')
    yield Setup(tmp_path / "broker.db", request.param, where)
    if request.param == "postgres":
        await _pg(f'DROP SCHEMA IF EXISTS "{where}" CASCADE')


async def _publish(path: Path) -> list[str]:
    events = [Event(type="order.placed", source="/t", data={"n": n}) for n in range(EVENTS)]
    async with SQLiteBroker(path) as broker:
        for start in range(0, EVENTS, 50):
            for event in events[start : start + 50]:
                await broker.publish("orders", [event], key=f"k-{event.data['n'] % 17}")  # type: ignore[index]
    return [event.id for event in events]


async def _start(setup: Setup, seed: str) -> Worker:
    args = (str(setup.broker), setup.backend, setup.where, seed)
    return await start_worker("tests.idempotency.fault_worker", *args)


async def _kill_somewhere(worker: Worker, chance: random.Random) -> None:
    cue = chance.choice(CUES)
    try:
        if cue is None:
            await asyncio.sleep(chance.uniform(0.05, 0.5))
        else:
            await worker.wait_for(cue, after=len(worker.lines), timeout=2.0)
    except TimeoutError:
        pass  # nothing left to do there: kill it anyway
    worker.kill()
    await worker.aclose()


async def _receipts(path: Path) -> list[str]:
    got: list[str] = []
    group = f"check-{uuid.uuid4().hex}"
    async with SQLiteBroker(path) as broker, broker.subscribe("receipts", group=group) as receipts:
        while True:
            try:
                delivery = await asyncio.wait_for(anext(receipts), 1.0)
            except TimeoutError:
                return got
            got.append(str(delivery.event.data["of"]))  # type: ignore[index]
            await delivery.ack()


async def test_every_effect_happens_once_when_consumers_are_killed(setup: Setup) -> None:
    ids = await _publish(setup.broker)
    chance = random.Random(f"{setup.backend}-{uuid.uuid4()}")
    for kill in range(KILLS):
        await _kill_somewhere(await _start(setup, f"{kill}"), chance)
    final = await _start(setup, "final")
    try:
        async with asyncio.timeout(60):
            while len(await setup.effects()) < EVENTS:  # noqa: ASYNC110 - another process writes
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # redeliveries of lost acks are skipped, not applied
    finally:
        await final.aclose()
    effects = dict(await setup.effects())
    assert sorted(effects) == sorted(ids)
    assert set(effects.values()) == {1}
    receipts = await _receipts(setup.broker)
    assert sorted(receipts) == sorted(ids)
