"""A consumer process for the inbox fault test, to be killed with SIGKILL at any moment.

Run as ``python -m tests.idempotency.fault_worker BROKER BACKEND WHERE SEED``: a router app
(group ``effects``) on the SQLite broker file ``BROKER`` consumes topic ``orders`` behind
``dedupe(inbox)``, with the inbox on ``BACKEND`` (``sqlite``: the file ``WHERE``; ``postgres``:
the schema ``WHERE``). Each handler inserts one row into ``effects`` (a plain INSERT: a second
effect would show as a second row) and publishes a receipt. It prints ``ready`` once
consuming, ``in-commit`` when a commit pauses just before COMMIT and ``committed`` when a
handler's transaction committed and its delivery is not acked yet: the parent's cues to kill.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any, Final

from tidings import App, Event
from tidings.adapters.sqlite.broker import SQLiteBroker
from tidings.messaging.handlers import Context, Handler, Middleware
from tidings.messaging.middleware.dedupe import dedupe
from tidings.testing.faults import READY, say

POSTGRES_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
PAUSE: Final = 0.005
SLOW: Final = 0.2
"""Share of commits (and of acks) that pause first, so kills land there too."""


def open_inbox(backend: str, where: str, chance: random.Random) -> Any:
    """Return the inbox of a backend, with a hook that sometimes pauses just before COMMIT."""
    if backend == "sqlite":
        from tidings.adapters.sqlite.dedup import SQLiteInbox

        inbox: Any = SQLiteInbox(where)

        def on_thread() -> None:
            if chance.random() < SLOW:
                say("in-commit")
                time.sleep(PAUSE)

        inbox.before_commit = on_thread
        return inbox
    from tidings.adapters.postgres.dedup import PostgresInbox

    inbox = PostgresInbox(POSTGRES_URL, schema=where)

    async def in_loop() -> None:
        if chance.random() < SLOW:
            say("in-commit")
            await asyncio.sleep(PAUSE)

    inbox.before_commit = in_loop
    return inbox


def committed(chance: random.Random) -> Middleware:
    """Outside dedupe: say so (and sometimes pause) once the inbox committed, before the ack."""

    def wrap(handler: Handler) -> Handler:
        async def run(ctx: Context) -> None:
            await handler(ctx)
            say("committed")
            if chance.random() < SLOW:
                await asyncio.sleep(PAUSE)

        return run

    return wrap


def effect_writer(backend: str, where: str, inbox: Any) -> Any:
    """Return a function writing the effect of one event through the open transaction."""
    if backend == "sqlite":

        async def write(event_id: str) -> None:
            inbox.current().execute("INSERT INTO effects (event_id) VALUES (?)", (event_id,))

        return write

    async def write_pg(event_id: str) -> None:
        query = f'INSERT INTO "{where}".effects (event_id) VALUES (%s)'
        await inbox.current().execute(query, (event_id,))

    return write_pg


async def main(broker_path: str, backend: str, where: str, seed: str) -> None:
    chance = random.Random(seed)
    inbox = open_inbox(backend, where, chance)
    write = effect_writer(backend, where, inbox)
    async with SQLiteBroker(broker_path, synchronous="NORMAL") as broker, inbox:
        app = App(
            broker, group="effects", ack_deadline=1.0, middleware=[committed(chance), dedupe(inbox)]
        )

        @app.handler("orders")
        async def handle(event: Event, ctx: Context) -> None:
            await asyncio.sleep(chance.random() * PAUSE)
            await write(event.id)
            await ctx.publish("receipts", Event(type="receipt", source="/w", data={"of": event.id}))

        await app.run(on_ready=lambda: say(READY))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
