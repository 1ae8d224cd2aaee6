"""What the router runs: the handler and middleware types, the `Context`, and routes.

A user writes ``async def on_placed(payload: OrderPlaced, ctx: Context) -> None``; the router
turns it into a `Handler`, a function of one `Context`, and wraps it in `Middleware`, functions
from handler to handler (watermill's shape: ``m1(m2(handler))``, the first one outermost).

What a handler publishes through `Context.publish` is buffered and published only when the
whole chain succeeds, just before the delivery is acked: an attempt that fails publishes
nothing, so a retry never doubles a downstream event.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from tidings.codecs import EventTypes
from tidings.errors import CodecError, ConfigurationError
from tidings.events import Event
from tidings.messaging.ports import Delivery

__all__ = [
    "Context",
    "Handler",
    "Interrupted",
    "Middleware",
    "Outgoing",
    "Route",
    "UserHandler",
    "compose",
    "make_route",
]

Handler: TypeAlias = Callable[["Context"], Awaitable[None]]
"""A handler as middleware sees it: returns when the event is handled, raises when not."""

Middleware: TypeAlias = Callable[[Handler], Handler]
"""Wraps a handler in another handler (retry, dead letter, timeout, correlation...)."""

UserHandler: TypeAlias = Callable[..., Awaitable[None]]
"""``async def f(payload, ctx)`` or ``async def f(payload)``; the payload may be the `Event`."""

_ID_NAMESPACE: Final = uuid.UUID("6f1b5d2e-7c1a-4f4e-9a57-0b8f3c1d2e9a")


class Interrupted(BaseException):
    """Raised by `Context.sleep` when the app stops: the delivery is left unsettled.

    It derives from BaseException so that ``except Exception`` in a handler or a middleware
    does not swallow it.
    """


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An event a handler published, waiting for the handler to succeed."""

    topic: str
    event: Event
    key: str | None


class Context:
    """What a handler gets besides its payload: the delivery, publishing, a key-holding sleep.

    Attributes:
        delivery: The broker's delivery (event, topic, partition, offset, key, attempt).
        payload: The decoded payload (the `Event` itself for raw handlers).
        group: The consumer group the app runs as.
        attempt: Which in-process attempt of the handler this is, from 1 (set by `retry`).
        outbox: What the current attempt published so far (middleware may rewrite it).
    """

    __slots__ = (
        "_settled",
        "_sleep",
        "_source",
        "_types",
        "attempt",
        "delivery",
        "group",
        "outbox",
        "payload",
    )

    def __init__(
        self,
        delivery: Delivery,
        payload: object,
        *,
        group: str,
        source: str,
        types: EventTypes | None,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.delivery = delivery
        self.payload = payload
        self.group = group
        self.attempt = 1
        self.outbox: list[Outgoing] = []
        self._source = source
        self._types = types
        self._sleep = sleep
        self._settled = False

    @property
    def event(self) -> Event:
        """The incoming event."""
        return self.delivery.event

    @property
    def settled(self) -> bool:
        """Whether a middleware already settled the delivery (rejected it, say)."""
        return self._settled

    async def publish(
        self, topic: str, message: object, *, key: str | None = None, **attributes: object
    ) -> Event:
        """Publish an event or a registered payload once the handler succeeds; return the event.

        A payload becomes an event with the app's source and an id derived from the incoming
        event's id, the group and its place in the outbox, so a redelivered event republishes
        the same ids (and an idempotent broker stores them once). ``key`` also becomes the new
        event's ``partitionkey``. The ``correlation`` middleware sets the correlation and
        causation ids.
        """
        event = message if isinstance(message, Event) else self._to_event(message, key, attributes)
        self.outbox.append(Outgoing(topic, event, key))
        return event

    def _to_event(self, payload: object, key: str | None, attributes: dict[str, object]) -> Event:
        if self._types is None:
            raise CodecError(f"cannot publish a {type(payload).__name__}: the app has no types")
        name = f"{self.group}/{self.event.id}/{len(self.outbox)}"
        attributes.setdefault("id", str(uuid.uuid5(_ID_NAMESPACE, name)))
        if key is not None:
            attributes.setdefault("partitionkey", key)
        return self._types.to_event(payload, source=self._source, **attributes)  # type: ignore[arg-type]

    async def sleep(self, seconds: float) -> None:
        """Wait without holding a concurrency slot; the event's key stays blocked meanwhile.

        Raises:
            Interrupted: the app is stopping (the delivery is left unsettled and comes back).
        """
        await self._sleep(seconds)

    async def reject(self, reason: str) -> None:
        """Move the event to the dead-letter topic with ``reason``; the router will not ack it."""
        self._settled = True
        self.outbox.clear()
        await self.delivery.reject(reason)


@dataclass(frozen=True, slots=True)
class Route:
    """One registered handler: which events it takes and how it runs.

    Attributes:
        topic: The topic it consumes.
        event_type: The event type it handles; None for every type of the topic.
        payload: The payload class to decode into; None to get the raw `Event`.
        handler: The user's function wrapped as a `Handler`, with its own middleware.
        name: The user's function's qualified name.
    """

    topic: str
    event_type: str | None
    payload: type[object] | None
    handler: Handler
    name: str


def compose(handler: Handler, middleware: Sequence[Middleware]) -> Handler:
    """Wrap ``handler`` so that ``middleware[0]`` is the outermost layer."""
    for wrap in reversed(middleware):
        handler = wrap(handler)
    return handler


def make_route(
    topic: str,
    fn: UserHandler,
    *,
    event_type: str | None,
    types: EventTypes | None,
    middleware: Sequence[Middleware] = (),
) -> Route:
    """Build a route; the payload class (and the event type) come from ``fn``'s annotation.

    The first parameter annotated with a registered class gets that payload decoded, and the
    event type defaults to the class's name in ``types``; annotated `Event` (or not at all) it
    gets the raw event, of ``event_type`` or, when that is None, of every type of the topic.

    Raises:
        ConfigurationError: ``fn`` is not ``async``, takes neither one nor two parameters,
            or its payload class is not registered in ``types``.
    """
    arity = _check_signature(fn)
    cls = _payload_class(fn, event_type, types)
    if cls is not None:
        event_type = _event_type_of(cls, event_type, types)
    handler = compose(_adapt(fn, arity), middleware)
    return Route(topic, event_type, cls, handler, getattr(fn, "__qualname__", repr(fn)))


def _check_signature(fn: UserHandler) -> int:
    if not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(f"handler {fn!r} must be an async function")
    arity = len(inspect.signature(fn).parameters)
    if arity not in (1, 2):
        raise ConfigurationError(f"handler {fn.__qualname__} must take (payload) or (payload, ctx)")
    return arity


def _payload_class(
    fn: UserHandler, event_type: str | None, types: EventTypes | None
) -> type[object] | None:
    """Return the annotated class of the first parameter; None for `Event` or no annotation."""
    try:
        hint = _first_hint(fn)
    except NameError as exc:  # a class defined in a function cannot be resolved by name
        if event_type is None or types is None:
            raise ConfigurationError(
                f"{fn.__qualname__}: cannot resolve its payload class ({exc}); name the event type"
            ) from exc
        return types.lookup(event_type).cls
    if hint is None or hint is Event or hint is object:
        return None
    if not isinstance(hint, type):
        raise ConfigurationError(f"{fn.__qualname__}: annotate the payload with one class")
    return hint


def _first_hint(fn: UserHandler) -> object:
    """Resolve the first parameter's annotation alone (``ctx: Context`` may be TYPE_CHECKING)."""
    first = next(iter(inspect.signature(fn).parameters))
    raw = inspect.get_annotations(fn).get(first)
    if not isinstance(raw, str):
        return raw
    namespace = getattr(fn, "__globals__", {})
    return eval(raw, namespace)  # noqa: S307 - what typing.get_type_hints does, for one name


def _event_type_of(cls: type[object], given: str | None, types: EventTypes | None) -> str:
    if types is None:
        raise ConfigurationError(f"{cls.__qualname__} payloads need the app's EventTypes")
    # EventTypes registers a class under one name; an older version's class is not the latest.
    names = [name for name in types.names() if types.lookup(name).cls is cls]
    if names and given in (None, names[0]):
        return names[0]
    if not names and given is not None and given in types:
        return given  # decoding checks that the event decodes to this class
    wanted = "an event type" if given is None else repr(given)
    raise ConfigurationError(f"{cls.__qualname__} is not registered as {wanted} in the types")


def _adapt(fn: UserHandler, arity: int) -> Handler:
    """Return the innermost handler: call ``fn``; a failed attempt's outbox is discarded."""

    async def call(ctx: Context) -> None:
        mark = len(ctx.outbox)
        try:
            await (fn(ctx.payload, ctx) if arity == 2 else fn(ctx.payload))
        except BaseException:
            del ctx.outbox[mark:]
            raise

    return call
