"""Projections: handlers per event type that keep one read model up to date.

::

    class OrderTotals(Projection[SQLiteTx]):
        name = "order_totals"
        version = 1                      # bump it to rebuild side by side into new tables
        tables = ("order_totals",)       # readers read the view "order_totals"

        def setup(self, tx: SQLiteTx) -> None:
            tx.execute(f"CREATE TABLE IF NOT EXISTS {tx.table('order_totals')} (...)")

        @handles("order.placed")         # by type name: receives the RecordedEvent
        def placed(self, event: RecordedEvent, tx: SQLiteTx) -> None:
            tx.execute(...)

        @handles(OrderCancelled)         # by payload class (needs `types`): the payload
        def cancelled(self, payload: OrderCancelled, tx: SQLiteTx) -> None:
            ...  # tx.record is the RecordedEvent being applied

A handler gets the event (or its payload) and the transaction handle of the read model's
backend (`SQLiteTx`, `PostgresTx`, `RedisTx`, `MemoryTx`), writes through it, and must not
commit: the runner commits the batch with its checkpoint. Handlers may be ``async def`` where
the backend allows it (not SQLite: its handlers run on the connection's thread).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import ClassVar, Final, Generic, Literal, TypeVar

from tidings.codecs import EventTypes
from tidings.errors import ConfigurationError, UnknownEventTypeError
from tidings.eventstore.ports import RecordedEvent
from tidings.projections.ports import ProjectionKey

__all__ = ["Handler", "OnError", "Projection", "handles"]

TxT = TypeVar("TxT")
F = TypeVar("F", bound=Callable[..., object])
OnError = Literal["stop", "skip"]
Handler = Callable[[RecordedEvent, TxT], object]
"""A bound handler as the runner calls it: ``(record, tx)``; may return an awaitable."""

_MARK: Final = "__tidings_handles__"
_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")


def handles(*event_types: str | type[object]) -> Callable[[F], F]:
    """Mark a `Projection` method as the handler of event type names or payload classes.

    A method marked with names receives the `RecordedEvent`; one marked with classes receives
    the payload decoded by the projection's `Projection.types` registry (upcast to the newest
    version). Either way the transaction's ``record`` attribute is the event being applied.
    """
    if not event_types:
        raise ValueError("handles() needs at least one event type name or payload class")

    def mark(fn: F) -> F:
        setattr(fn, _MARK, (*getattr(fn, _MARK, ()), *event_types))
        return fn

    return mark


class Projection(Generic[TxT]):
    """A projection: handlers per event type and the read model tables they write.

    Attributes (set on the subclass; ``name`` and ``version`` may also be given to __init__):
        name: Lower-case identifier (a-z, 0-9, _; at most 40): registry key and table prefix.
        version: Bump it to rebuild side by side: each version has its own tables, checkpoint
            and lease; readers switch to it once it has caught up.
        tables: The SQL tables ``setup`` creates (as ``{table}_v{version}``); activating a
            version points a view named ``{table}`` at its table.
        on_error: ``"stop"`` (default): an event that fails stops the projection with status
            failed and the error; ``"skip"``: the failure is recorded and the event skipped.
        types: The registry that decodes payloads for handlers declared by class.
    """

    name: str = ""
    version: int = 1
    tables: tuple[str, ...] = ()
    on_error: OnError = "stop"
    types: EventTypes | None = None
    _marked: ClassVar[dict[str | type[object], str]] = {}

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        marked = dict(cls._marked)
        for attribute, value in vars(cls).items():
            for event_type in getattr(value, _MARK, ()):
                marked[event_type] = attribute
        cls._marked = marked

    def __init__(self, *, name: str | None = None, version: int | None = None) -> None:
        if name is not None:
            self.name = name
        if version is not None:
            self.version = version
        _check(self)
        self._dispatch: dict[str, Handler[TxT]] | None = None

    @property
    def key(self) -> ProjectionKey:
        """The registry key of this projection at this version."""
        return ProjectionKey(self.name, self.version)

    def setup(self, tx: TxT) -> object:
        """Create this version's tables (idempotently); runs in a transaction before any batch."""
        return None

    def dispatch(self) -> Mapping[str, Handler[TxT]]:
        """Return the handler of each event type name, ready to call with ``(record, tx)``."""
        if self._dispatch is None:
            bound = (self._bind(t, getattr(self, a)) for t, a in self._marked.items())
            self._dispatch = dict(bound)
        return self._dispatch

    def has_async_handlers(self) -> bool:
        """Return True when ``setup`` or any handler is a coroutine function."""
        methods = [self.setup, *(getattr(self, a) for a in self._marked.values())]
        return any(inspect.iscoroutinefunction(m) for m in methods)

    def _bind(
        self, event_type: str | type[object], method: Callable[..., object]
    ) -> tuple[str, Handler[TxT]]:
        if isinstance(event_type, str):
            return event_type, method
        types = self.types
        if types is None:
            raise ConfigurationError(
                f"projection {self.name!r} handles {event_type.__qualname__}: set its `types`"
            )
        name = _name_of(types, event_type)

        def decoded(record: RecordedEvent, tx: TxT) -> object:
            return method(types.from_event(record.event), tx)

        return name, decoded

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} v{self.version}>"


def _name_of(types: EventTypes, cls: type[object]) -> str:
    for name in types.names():
        if types.lookup(name).cls is cls:
            return name
    raise UnknownEventTypeError(cls.__qualname__)


def _check(projection: Projection[TxT]) -> None:
    where = type(projection).__name__
    if not isinstance(projection.name, str) or not _NAME.fullmatch(projection.name):
        raise ConfigurationError(f"{where}.name {projection.name!r} must match {_NAME.pattern}")
    if not isinstance(projection.version, int) or projection.version < 1:
        raise ConfigurationError(f"{where}.version must be a positive int")
    if projection.on_error not in ("stop", "skip"):
        raise ConfigurationError(f"{where}.on_error must be 'stop' or 'skip'")
    for table in projection.tables:
        if not _NAME.fullmatch(table):
            raise ConfigurationError(f"{where}.tables: {table!r} must match {_NAME.pattern}")
