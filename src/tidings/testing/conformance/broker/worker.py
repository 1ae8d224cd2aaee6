"""A consumer process for the SIGKILL case: it does its side effect, then waits to be killed.

Run as ``python -m tidings.testing.conformance.broker.worker URL TOPIC GROUP EFFECTS DEADLINE``.
It joins the group, prints ``ready``, and for each delivery appends ``<event id> <attempt>`` to
the EFFECTS file (flushed and fsynced), prints ``effect <event id>`` and then never settles
it: the parent kills it with SIGKILL between the side effect and the ack.
"""

from __future__ import annotations

import asyncio
import os
import sys

from tidings.messaging import open_broker
from tidings.testing.faults import READY, say


async def _work(url: str, topic: str, group: str, effects: str, deadline: float) -> None:
    async with open_broker(url) as broker:  # type: ignore[attr-defined]
        subscription = broker.subscribe(topic, group=group, ack_deadline=deadline, prefetch=1)
        join = getattr(subscription, "join", None)
        if join is not None:
            await join()
        say(READY)
        async for delivery in subscription:
            with open(effects, "a", encoding="utf-8") as file:  # noqa: ASYNC230 (a tiny write)
                file.write(f"{delivery.event.id} {delivery.attempt}\n")
                file.flush()
                os.fsync(file.fileno())
            say(f"effect {delivery.event.id}")
            await asyncio.sleep(3600)  # killed here, before the ack


def main(argv: list[str]) -> None:
    """Parse the arguments and consume until killed."""
    url, topic, group, effects, deadline = argv
    asyncio.run(_work(url, topic, group, effects, float(deadline)))


if __name__ == "__main__":
    main(sys.argv[1:])
