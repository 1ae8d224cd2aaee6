"""Typed payloads: the registry that maps event type names to Python classes.

A payload class is a dataclass, a msgspec ``Struct`` or a pydantic model. It is registered under
an event type name and a schema version; the registry turns an instance into an `Event` (its
``data`` a JSON value, its schema version in the ``schemaversion`` extension) and an event back
into an instance::

    types = EventTypes()

    @types.register("order.placed", version=2)
    @dataclass(frozen=True)
    class OrderPlaced:
        order_id: str
        subtotal: Decimal

    event = types.to_event(OrderPlaced("o-1", Decimal("9.50")), source="/orders")
    placed = types.from_event(event)            # OrderPlaced(order_id='o-1', ...)

msgspec does the conversion for dataclasses and Structs (it validates types on the way in);
pydantic models use their own ``model_dump`` / ``model_validate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar, cast

import msgspec

from tidings.errors import CodecError, UnknownEventTypeError
from tidings.events import Event

__all__ = ["SCHEMA_VERSION", "EventTypes", "PayloadType", "schema_version"]

SCHEMA_VERSION: Final = "schemaversion"
"""The extension attribute that carries a payload's schema version."""

T = TypeVar("T")


class _Pydantic(Protocol):
    def model_dump(self, *, mode: str) -> object: ...


@dataclass(frozen=True, slots=True)
class PayloadType:
    """One registration: a Python class, its event type name and its schema version."""

    cls: type[object]
    name: str
    version: int

    def encode(self, payload: object) -> object:
        """Return the payload as JSON values."""
        if hasattr(payload, "model_dump"):
            return cast(_Pydantic, payload).model_dump(mode="json")
        return msgspec.to_builtins(payload)

    def decode(self, data: object) -> object:
        """Return an instance of the class built from JSON values (validated)."""
        validate = getattr(self.cls, "model_validate", None)
        if validate is not None:
            return validate(data)
        return msgspec.convert(data, self.cls)


class EventTypes:
    """A registry of payload classes by event type name and schema version."""

    def __init__(self) -> None:
        self._by_name: dict[tuple[str, int], PayloadType] = {}
        self._by_class: dict[type[object], PayloadType] = {}

    def register(self, name: str, *, version: int = 1) -> Callable[[type[T]], type[T]]:
        """Return a class decorator that registers the class under ``name`` and ``version``."""
        if not name:
            raise CodecError("an event type name must be a non-empty string")
        if version < 1:
            raise CodecError(f"schema versions start at 1, got {version}")

        def decorate(cls: type[T]) -> type[T]:
            self.add(cls, name, version=version)
            return cls

        return decorate

    def add(self, cls: type[object], name: str, *, version: int = 1) -> PayloadType:
        """Register ``cls`` under ``name`` and ``version``; the same pair twice is an error."""
        if (name, version) in self._by_name and self._by_name[(name, version)].cls is not cls:
            raise CodecError(f"event type {name} v{version} is already registered")
        if cls in self._by_class and self._by_class[cls] != PayloadType(cls, name, version):
            raise CodecError(f"{cls.__qualname__} is already registered under another name")
        entry = PayloadType(cls, name, version)
        self._by_name[(name, version)] = entry
        self._by_class[cls] = entry
        return entry

    def __contains__(self, name: object) -> bool:
        return any(key[0] == name for key in self._by_name)

    def names(self) -> list[str]:
        """Return the registered event type names, sorted."""
        return sorted({name for name, _ in self._by_name})

    def lookup(self, name: str, version: int | None = None) -> PayloadType:
        """Return the registration for a type name (and version; latest when None)."""
        if version is not None:
            entry = self._by_name.get((name, version))
        else:
            versions = [v for n, v in self._by_name if n == name]
            entry = self._by_name[(name, max(versions))] if versions else None
        if entry is None:
            raise UnknownEventTypeError(name, version)
        return entry

    def type_of(self, payload: object) -> PayloadType:
        """Return the registration of a payload's class."""
        entry = self._by_class.get(type(payload))
        if entry is None:
            raise UnknownEventTypeError(type(payload).__qualname__)
        return entry

    def to_event(
        self,
        payload: object,
        *,
        source: str,
        caused_by: Event | None = None,
        **attributes: object,
    ) -> Event:
        """Return an event whose type, data and schema version come from a registered payload.

        With ``caused_by``, the new event inherits that event's correlation id (or takes its id
        when it has none) and names it as its cause.
        """
        entry = self.type_of(payload)
        if caused_by is not None:
            attributes.setdefault("correlationid", caused_by.correlationid or caused_by.id)
            attributes.setdefault("causationid", caused_by.id)
        extensions = dict(cast(dict[str, object], attributes.pop("extensions", {})))
        extensions[SCHEMA_VERSION] = entry.version
        try:
            data = entry.encode(payload)
        except (TypeError, msgspec.EncodeError, ValueError) as exc:
            raise CodecError(f"cannot encode {entry.name}: {exc}") from exc
        return Event(type=entry.name, source=source, data=data, extensions=extensions, **attributes)  # type: ignore[arg-type]

    def from_event(self, event: Event) -> object:
        """Return the payload instance for an event, decoded with the class of its version."""
        entry = self.lookup(event.type, schema_version(event))
        try:
            return entry.decode(event.data)
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            raise CodecError(f"cannot decode {entry.name} v{entry.version}: {exc}") from exc

    def decode_as(self, event: Event, cls: type[T]) -> T:
        """Return an event's payload, checking that it is an instance of ``cls``."""
        payload = self.from_event(event)
        if not isinstance(payload, cls):
            raise CodecError(
                f"{event.type} decodes to {type(payload).__name__}, not {cls.__name__}"
            )
        return payload


def schema_version(event: Event) -> int:
    """Return an event's schema version (1 when the event does not carry one)."""
    value = event.extensions.get(SCHEMA_VERSION, 1)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise CodecError(f"event {event.id}: {SCHEMA_VERSION} must be an integer")
    try:
        return int(value)
    except ValueError as exc:
        raise CodecError(f"event {event.id}: {SCHEMA_VERSION} must be an integer") from exc
