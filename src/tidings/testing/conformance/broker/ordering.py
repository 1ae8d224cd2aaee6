"""The per-key order torture: 32 publishers, a churning group, handlers that fail and retry.

Each key's events are published in order by its own task, concurrently with the others. A
group of two members handles them one at a time per member, the way `tidings.App` does: a
handler that fails is retried in process before the delivery is settled. Twice during the run
a member is closed mid-work (what it held goes back to the group) and a new one joins. The
check: no event of a key is handled before every earlier event of that key has been, and
every event is handled.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from tidings.messaging.ports import Broker, Delivery
from tidings.testing.conformance.broker.helpers import (
    Consumer,
    eventually,
    group_name,
    make_events,
)

__all__ = ["OrderReport", "run_order_torture"]


@dataclass
class OrderReport:
    """What the torture saw: events never handled, events handled too early, faults injected."""

    missing: set[str] = field(default_factory=set)
    out_of_order: list[tuple[str, int, int]] = field(default_factory=list)
    failures: int = 0
    members_closed: int = 0


class _Torture:
    def __init__(
        self, broker: Broker, topic: str, *, keys: int, per_key: int, seed: str, ack_deadline: float
    ) -> None:
        self.broker, self.topic, self.per_key = broker, topic, per_key
        self.ack_deadline = ack_deadline
        self.keys = [f"key-{n}" for n in range(keys)]
        self.group = group_name("order")
        self.random = random.Random(seed)
        self.progress: dict[str, int] = {}
        self.report = OrderReport()

    @property
    def handled(self) -> int:
        return sum(n + 1 for n in self.progress.values())

    async def handle(self, delivery: Delivery) -> None:
        while self.random.random() < 0.15:  # the handler failed: retry it in process
            self.report.failures += 1
            await asyncio.sleep(0)
        key, n = delivery.key or "", int(delivery.event.data["n"])  # type: ignore[index]
        done = self.progress.get(key, -1)
        if n > done + 1:
            self.report.out_of_order.append((key, n, done))
        self.progress[key] = max(done, n)
        await delivery.ack()

    async def publish(self, key: str) -> None:
        for event in make_events(self.per_key, key=key):
            await self.broker.publish(self.topic, [event])
            await asyncio.sleep(self.random.random() / 1000)

    def member(self) -> Consumer:
        return Consumer(
            self.broker,
            self.topic,
            group=self.group,
            handler=self.handle,
            prefetch=8,
            ack_deadline=self.ack_deadline,
        )

    async def churn(self, members: list[Consumer]) -> None:
        total = len(self.keys) * self.per_key
        for share in (3, 3 / 2):
            await eventually(lambda: self.handled >= total / share, timeout=60.0)  # noqa: B023
            await members.pop(0).stop()
            self.report.members_closed += 1
            members.append(await self.member().start())

    def finished(self) -> bool:
        return all(self.progress.get(key, -1) == self.per_key - 1 for key in self.keys)


async def run_order_torture(
    broker: Broker,
    topic: str,
    *,
    keys: int,
    per_key: int,
    seed: str,
    ack_deadline: float = 3.0,
    timeout: float = 90.0,
) -> OrderReport:
    """Run the torture on a fresh topic and return what it saw.

    What a closed member held comes back at once or after ``ack_deadline``, whichever the
    backend does.
    """
    torture = _Torture(
        broker, topic, keys=keys, per_key=per_key, seed=seed, ack_deadline=ack_deadline
    )
    await broker.create_topic(topic, partitions=8)
    members = [await torture.member().start() for _ in range(2)]
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(torture.churn(members), *map(torture.publish, torture.keys))
            await eventually(torture.finished, timeout=timeout)
    except TimeoutError:
        pass
    finally:
        for member in members:
            await member.stop()
    torture.report.missing = {
        f"{key}/{n}"
        for key in torture.keys
        for n in range(torture.progress.get(key, -1) + 1, per_key)
    }
    return torture.report
