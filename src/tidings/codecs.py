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

Upcasting: when a payload's shape changes, register the new class under the next version and an
upcaster that turns the data of the old version into the data of the new one. Stored events are
never rewritten; `EventTypes.from_event` chains the upcasters on read::

    @types.upcaster("order.placed", from_version=1)
    def rename_total(data: dict[str, object]) -> dict[str, object]:
        return {**data, "subtotal": data.pop("total")}

Once a type has an upcaster, every older event of that type is read as the newest registered
version; a missing link in the chain raises `CodecError` naming it. Types without upcasters
decode each version with its own class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias, TypeVar, cast

import msgspec

from tidings.errors import CodecError, UnknownEventTypeError
from tidings.events import Event

__all__ = ["SCHEMA_VERSION", "EventTypes", "PayloadType", "Upcaster", "schema_version"]

SCHEMA_VERSION: Final = "schemaversion"
"""The extension attribute that carries a payload's schema version."""

T = TypeVar("T")

Upcaster: TypeAlias = Callable[[dict[str, object]], dict[str, object]]
"""Turns the data of one schema version into the data of the next (a fresh dict)."""

U = TypeVar("U", bound=Upcaster)


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
        self._latest: dict[str, int] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._upcast_names: set[str] = set()

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
        self._latest[name] = max(version, self._latest.get(name, 0))
        return entry

    def upcaster(self, name: str, *, from_version: int) -> Callable[[U], U]:
        """Return a decorator that registers ``fn(data) -> data`` from ``from_version`` to the next.

        The function receives a copy of the stored data (a dict) and returns the data of version
        ``from_version + 1``; it must not touch anything else.
        """

        def decorate(fn: U) -> U:
            self.add_upcaster(name, fn, from_version=from_version)
            return fn

        return decorate

    def add_upcaster(self, name: str, fn: Upcaster, *, from_version: int) -> None:
        """Register ``fn`` as the upcaster of ``name`` from ``from_version`` to the next version."""
        if not name:
            raise CodecError("an event type name must be a non-empty string")
        if from_version < 1:
            raise CodecError(f"schema versions start at 1, got {from_version}")
        known = self._upcasters.get((name, from_version))
        if known is not None and known is not fn:
            raise CodecError(f"{name} already has an upcaster from v{from_version}")
        self._upcasters[(name, from_version)] = fn
        self._upcast_names.add(name)

    def upcast(self, name: str, version: int, data: object) -> tuple[int, object]:
        """Return ``data`` of ``version`` upcast to the newest registered version, and that version.

        Data of a type without upcasters, or already at (or above) the newest version, is
        returned unchanged. The stored data is never modified: upcasters get a copy.

        Raises:
            CodecError: a link of the chain is missing, the data is not an object, or an
                upcaster failed.
        """
        target = self._latest.get(name, version)
        if version >= target or name not in self._upcast_names:
            return version, data
        if not isinstance(data, dict):
            raise CodecError(f"cannot upcast {name} v{version}: its data is not an object")
        current: dict[str, object] = data
        for step in range(version, target):
            current = self._step(name, step, target, dict(current))
        return target, current

    def _step(
        self, name: str, version: int, target: int, data: dict[str, object]
    ) -> dict[str, object]:
        fn = self._upcasters.get((name, version))
        if fn is None:
            raise CodecError(
                f"cannot upcast {name} to v{target}: no upcaster from v{version} to v{version + 1}"
            )
        try:
            result = fn(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"upcaster of {name} v{version} failed: {exc!r}") from exc
        if not isinstance(result, dict):
            raise CodecError(f"upcaster of {name} v{version} returned {type(result).__name__}")
        return result

    def __contains__(self, name: object) -> bool:
        return any(key[0] == name for key in self._by_name)

    def names(self) -> list[str]:
        """Return the registered event type names, sorted."""
        return sorted({name for name, _ in self._by_name})

    def lookup(self, name: str, version: int | None = None) -> PayloadType:
        """Return the registration for a type name (and version; latest when None)."""
        if version is None:
            version = self._latest.get(name)
        entry = None if version is None else self._by_name.get((name, version))
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
        """Return the payload instance for an event.

        Types with upcasters are upcast to the newest registered version and decoded with its
        class; other types decode with the class of the event's own version.
        """
        version, data = schema_version(event), event.data
        if event.type in self._upcast_names:
            version, data = self.upcast(event.type, version, data)
        entry = self.lookup(event.type, version)
        try:
            return entry.decode(data)
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
