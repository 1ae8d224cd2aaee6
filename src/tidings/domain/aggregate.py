"""Aggregate classes: command methods check invariants and record events; handlers evolve state.

::

    class BankAccount(Aggregate):
        balance: int

        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.balance = 0

        def deposit(self, cents: int) -> None:  # a command: check, then record
            if cents <= 0:
                raise ValueError("deposit a positive amount")
            self.record(MoneyDeposited(cents))

        @when(MoneyDeposited)  # evolves state; never checks, never fails
        def _deposited(self, event: MoneyDeposited) -> None:
            self.balance += event.cents

`record` applies the payload at once (so later checks in the same command see the new state)
and keeps it in `Aggregate.pending` until a `Repository` saves it. Replaying a stream calls the
same handlers, so state is only ever changed by events.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Self, TypeVar

import msgspec

from tidings.errors import DomainError, UnhandledEventError

__all__ = ["Aggregate", "when"]

F = TypeVar("F", bound=Callable[..., None])
Handler = Callable[[Any, Any], None]

_MARK: Final = "__tidings_when__"
_BOOKKEEPING: Final = frozenset({"id", "version", "pending"})


def when(payload_type: type[object]) -> Callable[[F], F]:
    """Return a decorator that marks an `Aggregate` method as the handler of ``payload_type``.

    The handler receives the payload and changes the aggregate's state; it must not check
    invariants or fail, because it also runs when old events are replayed.
    """

    def mark(fn: F) -> F:
        setattr(fn, _MARK, payload_type)
        return fn

    return mark


class Aggregate:
    """Base class of aggregates: a consistency boundary whose state comes from its events.

    Subclasses define ``__init__(self, id)`` (calling ``super().__init__(id)``, then setting the
    initial state), command methods that call `record`, and one ``@when(PayloadType)`` handler
    per event type. Handlers are inherited and may be overridden per payload type.

    Attributes:
        id: The aggregate's id; its stream is ``f"{stream_prefix}-{id}"``.
        version: The version of the last event applied (0: no events yet).
        pending: Payloads recorded since the aggregate was loaded or saved.
        stream_prefix: Class attribute: the stream id prefix (default: the class name in lower
            case).
        snapshot_version: Class attribute: the schema version of the snapshot state. Raise it
            whenever the state's shape changes; older snapshots are then ignored and rebuilt.
    """

    stream_prefix: ClassVar[str] = "aggregate"
    snapshot_version: ClassVar[int] = 1
    _handlers: ClassVar[dict[type[object], Handler]] = {}
    _state_hints: ClassVar[dict[str, object] | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "stream_prefix" not in cls.__dict__:
            cls.stream_prefix = cls.__name__.lower()
        cls._handlers = {**cls._handlers, **_own_handlers(cls)}
        cls._state_hints = None

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0
        self.pending: list[object] = []
        self._subjects: set[str] = set()  # whose personal data the state holds (see Shredder)

    def record(self, payload: object) -> None:
        """Apply a new event's payload now and keep it for the next save."""
        self.apply(payload)
        self.version += 1
        self.pending.append(payload)

    def apply(self, payload: object) -> None:
        """Change state by one event: call the ``@when`` handler of the payload's type.

        Raises:
            UnhandledEventError: no handler accepts the payload's type.
        """
        handler = self._handlers.get(type(payload))
        if handler is None:
            raise UnhandledEventError(type(self), type(payload))
        handler(self, payload)

    def to_snapshot(self) -> dict[str, object]:
        """Return the state as JSON values: every public attribute but id, version, pending.

        Override together with `from_snapshot` (and raise `snapshot_version`) for a state that
        attributes and class annotations do not describe.
        """
        state = {
            name: value
            for name, value in vars(self).items()
            if not name.startswith("_") and name not in _BOOKKEEPING
        }
        built: dict[str, object] = msgspec.to_builtins(state)
        return built

    @classmethod
    def from_snapshot(cls, id: str, version: int, state: Mapping[str, object]) -> Self:
        """Rebuild an aggregate from `to_snapshot` output taken at ``version``.

        Values of attributes annotated on the class are converted back to the annotated type
        (tuples, Decimals, datetimes, dataclasses...); others are kept as JSON values.
        """
        aggregate = cls(id)
        hints = cls._hints()
        for name, value in state.items():
            hint = hints.get(name)
            setattr(aggregate, name, value if hint is None else msgspec.convert(value, hint))
        aggregate.version = version
        return aggregate

    @classmethod
    def _hints(cls) -> dict[str, object]:
        if cls._state_hints is None:
            try:
                hints = typing.get_type_hints(cls)
            except NameError as exc:
                raise DomainError(
                    f"cannot resolve the annotations of {cls.__qualname__} to read its snapshot "
                    f"({exc}); define the types at module level or override from_snapshot"
                ) from exc
            cls._state_hints = {
                name: hint
                for name, hint in hints.items()
                if typing.get_origin(hint) is not ClassVar and name not in _BOOKKEEPING
            }
        return cls._state_hints

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, version={self.version})"


def _own_handlers(cls: type[Aggregate]) -> dict[type[object], Handler]:
    handlers: dict[type[object], Handler] = {}
    for name, value in cls.__dict__.items():
        payload_type = getattr(value, _MARK, None)
        if payload_type is None:
            continue
        if payload_type in handlers:
            raise TypeError(
                f"{cls.__qualname__}.{name}: a second @when({payload_type.__qualname__}) handler"
            )
        handlers[payload_type] = value
    return handlers
