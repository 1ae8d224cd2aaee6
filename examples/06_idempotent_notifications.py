"""Example 6: one SMS per shipped order, however often the order's event is delivered.

A notification consumer gets ``OrderShipped`` and sends an SMS through a provider: here a real
HTTP server on 127.0.0.1 (`FakeSmsProvider`) that counts what it sends and honours an
``Idempotency-Key`` header (a repeated key gets the first response again, nothing is sent).

The event is delivered three times, as brokers do: once; again within 30 seconds, while the
first handler is still talking to the provider (the group is moved back, as a rebalance or a
lost ack does); and again after a crash (the group restarts from an old offset). Three
mechanisms each send exactly one SMS, where the unprotected handler sends three:

- ``dedup-key``: the ``dedupe`` middleware around the handler, with a dedup store (SQLite);
- ``provider-key``: no state of our own: the provider's idempotency key, the event id;
- ``state-machine``: `Effects` (pending -> sending -> sent in SQLite) plus the provider key.

Run it: ``python examples/06_idempotent_notifications.py``.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidings import App, EventTypes
from tidings.adapters.memory.broker import MemoryBroker
from tidings.adapters.sqlite.dedup import SQLiteDedupStore
from tidings.idempotency import Effects
from tidings.messaging.handlers import Context, Handler, Middleware
from tidings.messaging.middleware import correlation, dead_letter, retry
from tidings.messaging.middleware.dedupe import dedupe

types = EventTypes()
MECHANISMS = ("unprotected", "dedup-key", "provider-key", "state-machine")


@types.register("order.shipped")
@dataclass(frozen=True)
class OrderShipped:
    order_id: str
    phone: str


class FakeSmsProvider:
    """An SMS provider on a local port: ``POST /messages`` sends (counts), keys replay.

    Attributes:
        sent: Every message actually sent, as (to, text).
        requests: How many send requests arrived, replays included.
        latency: Seconds each send takes (a real provider takes some).
    """

    def __init__(self, latency: float = 0.2) -> None:
        self.sent: list[tuple[str, str]] = []
        self.requests = 0
        self.latency = latency
        self._responses: dict[str, dict[str, str]] = {}
        self._app = Starlette(routes=[Route("/messages", self._send, methods=["POST"])])
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def _send(self, request: Request) -> JSONResponse:
        self.requests += 1
        key = request.headers.get("idempotency-key")
        if key is not None and key in self._responses:
            return JSONResponse(self._responses[key], headers={"Idempotent-Replayed": "true"})
        body = await request.json()
        await asyncio.sleep(self.latency)
        if key is not None and key in self._responses:  # a concurrent request with the key
            return JSONResponse(self._responses[key], headers={"Idempotent-Replayed": "true"})
        self.sent.append((body["to"], body["text"]))
        response = {"id": f"sms-{len(self.sent)}", "to": body["to"]}
        if key is not None:
            self._responses[key] = response
        return JSONResponse(response, status_code=201)

    async def start(self) -> str:
        """Serve on a free port of 127.0.0.1; return the base URL."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        # Accepted sockets inherit it: without it, each response waits ~40 ms (Nagle + delayed ACK).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        config = uvicorn.Config(self._app, log_level="warning", lifespan="off", ws="none")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    def count(self, phone: str) -> int:
        """Return how many messages were sent to ``phone``."""
        return sum(1 for to, _ in self.sent if to == phone)


class SmsClient:
    """Sends SMS through the provider's HTTP API, with an idempotency key when given one."""

    def __init__(self, base_url: str) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=10.0)

    async def send(self, to: str, text: str, *, key: str | None = None) -> str:
        """Send one SMS; return the provider's message id."""
        headers = {} if key is None else {"Idempotency-Key": key}
        response = await self._http.post(
            "/messages", json={"to": to, "text": text}, headers=headers
        )
        response.raise_for_status()
        return str(response.json()["id"])

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()


@dataclass
class Timings:
    """How long each handling of a delivery took, per mechanism, in milliseconds."""

    runs: dict[str, list[float]] = field(default_factory=dict)

    def middleware(self, name: str) -> Middleware:
        """Time the whole handler chain below it."""

        def wrap(handler: Handler) -> Handler:
            async def run(ctx: Context) -> None:
                start = time.perf_counter()
                await handler(ctx)
                self.runs.setdefault(name, []).append((time.perf_counter() - start) * 1000)

            return run

        return wrap


def topic_of(mechanism: str) -> str:
    """Each mechanism's consumer reads a topic of its own (a group gets every event of a topic)."""
    return f"shipments.{mechanism}"


def text_of(order: OrderShipped) -> str:
    """The message a customer gets."""
    return f"Your order {order.order_id} is on its way."


def build_app(
    mechanism: str, broker: MemoryBroker, sms: SmsClient, store: SQLiteDedupStore, timings: Timings
) -> App:
    """The notification consumer, protected by one mechanism, as the group ``mechanism``."""
    protection = [dedupe(store)] if mechanism == "dedup-key" else []
    stack = [timings.middleware(mechanism), correlation(), dead_letter(), retry(3, base=0.05)]
    app = App(broker, group=mechanism, types=types, middleware=[*stack, *protection])
    effects = Effects(store, consumer=mechanism, poll=0.05)
    send: Callable[[OrderShipped, Context], Awaitable[object]] = {
        "unprotected": lambda o, ctx: sms.send(o.phone, text_of(o)),
        "dedup-key": lambda o, ctx: sms.send(o.phone, text_of(o)),
        "provider-key": lambda o, ctx: sms.send(
            o.phone, text_of(o), key=f"{mechanism}/{ctx.event.id}"
        ),
        "state-machine": lambda o, ctx: effects.run(
            f"sms:{o.order_id}", lambda key: sms.send(o.phone, text_of(o), key=key), sleep=ctx.sleep
        ),
    }[mechanism]

    @app.handler(topic_of(mechanism))
    async def notify(order: OrderShipped, ctx: Context) -> None:
        await send(order, ctx)

    return app


async def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the consumer did not get there in time")
        await asyncio.sleep(0.01)


async def deliver_three_times(app: App, broker: MemoryBroker, provider: FakeSmsProvider) -> None:
    """Deliver one event once, again while the first is in flight, and again after a crash."""
    start, topic, everywhere = provider.requests, topic_of(app.group), dict.fromkeys(range(4), 0)
    async with app.running():
        await until(lambda: provider.requests > start)  # the first send is in flight
        await broker.replay(topic, group=app.group, offsets=everywhere)
        await until(lambda: app.stats.acked >= 2)
    async with app.running():  # a consumer crashed before its ack; the group comes back
        await broker.replay(topic, group=app.group, offsets=everywhere)
        await until(lambda: app.stats.acked >= 3)


async def main(folder: Path) -> dict[str, int]:
    """Run each mechanism on its own phone number; return how many SMS each sent."""
    provider = FakeSmsProvider()
    sms = SmsClient(await provider.start())
    timings, sent = Timings(), {}
    try:
        async with MemoryBroker() as broker, SQLiteDedupStore(folder / "dedup.db") as store:
            for number, mechanism in enumerate(MECHANISMS):
                phone = f"+1555000{number:04d}"
                event = types.to_event(OrderShipped(f"o-{number}", phone), source="/shop")
                app = build_app(mechanism, broker, sms, store, timings)
                await broker.publish(topic_of(mechanism), [event], key=event.data["order_id"])  # type: ignore[index]
                await deliver_three_times(app, broker, provider)
                sent[mechanism] = provider.count(phone)
    finally:
        await sms.aclose()
        await provider.stop()
    for mechanism in MECHANISMS:
        runs = timings.runs.get(mechanism, [])
        print(f"{mechanism:>13}: {sent[mechanism]} SMS sent for {len(runs)} deliveries handled")
    return sent


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
