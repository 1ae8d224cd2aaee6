"""The router, `tidings.App`: handlers per topic and event type, run under middleware.

::

    app = App("sqlite:///shop.db", group="billing", types=types)

    @app.handler("orders")
    async def bill(order: OrderPlaced, ctx: Context) -> None:
        await ctx.publish("invoices", InvoiceIssued(order.order_id), key=order.order_id)

    await app.run()            # until app.stop(); `tidings worker shop:app` does this

The app subscribes its group to each topic it has handlers for; the dispatcher
(`tidings.messaging.dispatch`) runs the deliveries, one per key at a time, and the settler
(`tidings.messaging.settle`) decodes each, runs its handler inside the middleware and settles it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Literal, TypeVar

from tidings.codecs import EventTypes
from tidings.errors import ConfigurationError
from tidings.messaging import open_broker
from tidings.messaging.dispatch import Dispatcher, Pump
from tidings.messaging.handlers import (
    Middleware,
    Route,
    UserHandler,
    compose,
    make_route,
)
from tidings.messaging.middleware import default_middleware
from tidings.messaging.ports import Broker, Delivery
from tidings.messaging.settle import AppStats, Settler

__all__ = ["App", "AppStats", "connected"]

F = TypeVar("F", bound=UserHandler)


class App:
    """Runs async handlers for the events of some topics, as one consumer group.

    Args:
        broker: A `Broker`, which the caller opens and closes, or a URL (None: the
            configured one), which the app opens when it runs and closes when it stops.
        group: The consumer group: every group gets every event; members of a group (several
            processes running the same app) share the work.
        types: The payload registry used to decode payloads and encode what handlers publish.
        concurrency: How many handlers may run at once; one per key at a time, always.
        middleware: Wraps every handler, first one outermost (None: `default_middleware`).
        source: The ``source`` of events built from published payloads (default ``/group``).
        ack_deadline: Asked of the broker per delivery; held deliveries are extended every
            third of it.
        prefetch: How many unsettled deliveries the broker may hand the app per topic.
        drain_timeout: How long `run` waits for running handlers after `stop`.
        unhandled: What to do with an event no handler takes: ``"reject"`` it to the
            dead-letter topic, or ``"ack"`` it (ignore it).
    """

    def __init__(
        self,
        broker: Broker | str | None = None,
        *,
        group: str,
        types: EventTypes | None = None,
        concurrency: int = 32,
        middleware: Sequence[Middleware] | None = None,
        source: str | None = None,
        ack_deadline: float = 30.0,
        prefetch: int = 64,
        drain_timeout: float = 30.0,
        unhandled: Literal["reject", "ack"] = "reject",
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._broker_or_url = broker
        self.group = group
        self.types = types
        self.concurrency = concurrency
        self.middleware = list(default_middleware() if middleware is None else middleware)
        self.source = source or f"/{group}"
        self.ack_deadline = ack_deadline
        self.prefetch = prefetch
        self.drain_timeout = drain_timeout
        self.unhandled = unhandled
        self.stats = AppStats()
        self._routes: dict[tuple[str, str | None], Route] = {}
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._running = False

    @property
    def topics(self) -> list[str]:
        """The topics the app has handlers for, sorted."""
        return sorted({topic for topic, _ in self._routes})

    @property
    def routes(self) -> list[Route]:
        """Every registered handler."""
        return list(self._routes.values())

    def handler(
        self, topic: str, event_type: str | None = None, *, middleware: Sequence[Middleware] = ()
    ) -> Callable[[F], F]:
        """Return a decorator registering an async handler for events of ``topic``.

        The event type comes from the payload class the first parameter is annotated with,
        or is given; a handler of raw `Event`s without a type takes every type of the topic
        that has no handler of its own. ``middleware`` wraps this handler only, inside the
        app's middleware (a per-handler `timeout`, say).
        """

        def register(fn: F) -> F:
            self.add_handler(topic, fn, event_type=event_type, middleware=middleware)
            return fn

        return register

    def add_handler(
        self,
        topic: str,
        fn: UserHandler,
        *,
        event_type: str | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> Route:
        """Register ``fn`` (see `handler`); one handler per topic and event type."""
        if self._running:
            raise ConfigurationError("add handlers before the app runs")
        route = make_route(
            topic, fn, event_type=event_type, types=self.types, middleware=middleware
        )
        known = self._routes.get((topic, route.event_type))
        if known is not None:
            raise ConfigurationError(
                f"{topic}/{route.event_type or '*'} already has a handler: {known.name}"
            )
        self._routes[(topic, route.event_type)] = route
        return route

    def stop(self) -> None:
        """Ask `run` to stop taking deliveries and drain (safe from a signal handler)."""
        self._stopping = True
        if self._stop is not None:
            self._stop.set()

    async def run(self, *, on_ready: Callable[[], object] | None = None) -> None:
        """Consume until `stop`, then drain: running handlers finish, the rest come back.

        ``on_ready`` is called once the subscriptions are made.

        Raises:
            ConfigurationError: the app has no handlers, or is already running.
            TidingsError: a subscription failed (after draining what was running).
        """
        if not self._routes:
            raise ConfigurationError("the app has no handlers")
        if self._running:
            raise ConfigurationError("the app is already running")
        self._running = True
        self._stop = asyncio.Event()
        if self._stopping:
            self._stop.set()
        try:
            async with connected(self._broker_or_url) as broker:
                await self._consume(broker, on_ready)
        finally:
            self._running = self._stopping = False
            self._stop = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[App]:
        """Run the app in a task for the body of an ``async with``, then stop and drain it."""
        started = asyncio.Event()
        task = asyncio.create_task(self.run(on_ready=started.set), name=f"app-{self.group}")
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        try:
            if task.done():
                task.result()  # raises why it could not start
            yield self
        finally:
            self.stop()
            await task

    async def _consume(self, broker: Broker, on_ready: Callable[[], object] | None) -> None:
        dispatcher = Dispatcher(
            self._settler(broker), concurrency=self.concurrency, ack_deadline=self.ack_deadline
        )
        pumps = [Pump(self._subscribe(broker, topic), dispatcher.submit) for topic in self.topics]
        tasks = [asyncio.create_task(pump.run()) for pump in pumps]
        dispatcher.start()
        if on_ready is not None:
            on_ready()
        try:
            await self._until_stopped(tasks)
        finally:
            self.stats.cancelled += await dispatcher.drain(self.drain_timeout)
            await asyncio.gather(*(pump.aclose() for pump in pumps))

    def _settler(self, broker: Broker) -> Settler:
        chains = {key: compose(r.handler, self.middleware) for key, r in self._routes.items()}
        return Settler(
            broker,
            self._routes,
            chains,
            group=self.group,
            source=self.source,
            types=self.types,
            unhandled_ack=self.unhandled == "ack",
            stats=self.stats,
        )

    def _subscribe(self, broker: Broker, topic: str) -> AsyncIterator[Delivery]:
        return broker.subscribe(
            topic, group=self.group, ack_deadline=self.ack_deadline, prefetch=self.prefetch
        )

    async def _until_stopped(self, pumps: list[asyncio.Task[None]]) -> None:
        assert self._stop is not None
        stop = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({stop, *pumps}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, *pumps):
            task.cancel()
        await asyncio.gather(stop, *pumps, return_exceptions=True)
        errors = [t.exception() for t in done if t is not stop and not t.cancelled()]
        for error in errors:
            if error is not None:
                raise error


@contextlib.asynccontextmanager
async def connected(broker: Broker | str | None) -> AsyncIterator[Broker]:
    """Yield a broker: a given one as it is, or one opened for a URL and closed afterwards."""
    if broker is not None and not isinstance(broker, str):
        yield broker
        return
    opened = open_broker(broker)
    try:
        opener = getattr(opened, "open", None)
        if opener is not None:
            await opener()
        yield opened
    finally:
        await opened.aclose()
