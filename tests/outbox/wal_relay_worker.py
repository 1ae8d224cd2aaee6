"""A relay process for the tableless outbox fault test, to be killed with SIGKILL mid-batch.

Run as ``python -m tests.outbox.wal_relay_worker SLOT BROKER_FILE BATCH HANG_AT``: the generic
`Relay` moves messages from the WAL source on ``SLOT`` to the SQLite broker in ``BROKER_FILE``,
``BATCH`` messages per fetch. It prints ``ready``, then ``published <topic> <n>`` after each
publish call, and after publish call number ``HANG_AT`` it prints ``hang`` and stops there,
with that batch published in part (or whole) and not marked: the parent's cue to kill it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from tests.outbox.wal_support import POSTGRES_URL

from tidings.adapters.postgres.outbox_wal import PostgresWalOutboxSource
from tidings.adapters.sqlite.broker import SQLiteBroker
from tidings.events import Event
from tidings.outbox.relay import Relay
from tidings.testing.faults import READY, say


class HangingBroker:
    """Publishes through the real broker, reports each call, and hangs after call ``hang_at``."""

    def __init__(self, broker: SQLiteBroker, hang_at: int) -> None:
        self.broker = broker
        self.capabilities = broker.capabilities
        self.calls = 0
        self.hang_at = hang_at

    async def publish(self, topic: str, events: Sequence[Event], *, key: str | None = None) -> Any:
        results = await self.broker.publish(topic, events, key=key)
        self.calls += 1
        say(f"published {topic} {len(events)}")
        if self.calls == self.hang_at:
            say("hang")
            await asyncio.Event().wait()
        return results


async def main(slot: str, broker_file: str, batch: int, hang_at: int) -> None:
    source = PostgresWalOutboxSource(POSTGRES_URL, slot=slot, create=False)
    async with source, SQLiteBroker(broker_file) as broker:
        relay = Relay(source, HangingBroker(broker, hang_at), batch_size=batch)  # type: ignore[arg-type]
        say(READY)
        await relay.drain()
    say("drained")


if __name__ == "__main__":
    slot, broker_file, batch, hang_at = sys.argv[1:5]
    asyncio.run(main(slot, broker_file, int(batch), int(hang_at)))
