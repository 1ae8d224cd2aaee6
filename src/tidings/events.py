"""The event envelope: one immutable fact, with the CloudEvents 1.0 attributes.

`Event` holds the CloudEvents context attributes, the data, the extensions tidings
names (`partitionkey`, `correlationid`, `causationid`, `traceparent`, `tracestate`) and any
free-form extensions. Facts that a store or broker assigns (stream, version, position, delivery
count) live on the record or delivery that wraps an event, never in it.

`Event.to_json()` and `Event.from_json()` give the CloudEvents JSON structured format; the
binary-mode header mappings for HTTP and Kafka are in `tidings.bindings`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, NoReturn

import msgspec

from tidings.errors import InvalidAttributeError, MalformedEventError
from tidings.ids import new_event_id

__all__ = [
    "CONTEXT_ATTRIBUTES",
    "NAMED_EXTENSIONS",
    "SPECVERSION",
    "Event",
    "ExtensionValue",
    "format_time",
    "is_json_content_type",
    "parse_time",
]

SPECVERSION: Final = "1.0"

ExtensionValue = str | int | bool
"""The types an extension attribute may hold in tidings (CloudEvents String, Integer, Boolean)."""

CONTEXT_ATTRIBUTES: Final = frozenset(
    {"id", "source", "type", "specversion", "subject", "time", "datacontenttype", "dataschema"}
)
NAMED_EXTENSIONS: Final = frozenset(
    {"partitionkey", "correlationid", "causationid", "traceparent", "tracestate"}
)
_RESERVED: Final = CONTEXT_ATTRIBUTES | NAMED_EXTENSIONS | {"data", "data_base64"}
_EXTENSION_NAME: Final = re.compile(r"[a-z0-9]{1,20}")
_INT32: Final = range(-(2**31), 2**31)

_json_encoder: Final = msgspec.json.Encoder()
_json_decoder: Final = msgspec.json.Decoder()


class _FrozenExtensions(dict[str, ExtensionValue]):
    """An event's extensions: a dict (so msgspec encodes it) that refuses every change."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("an event's extensions cannot change; use Event.replace()")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[object, ...]:
        return dict, (dict(self),)


_NO_EXTENSIONS: Final = _FrozenExtensions()
_GOOD_NAMES: Final[set[str]] = set()
_GOOD_NAMES_MAX: Final = 10_000
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_force_setattr: Final = msgspec.structs.force_setattr


def _no_extensions() -> Mapping[str, ExtensionValue]:
    return _NO_EXTENSIONS


def _now() -> datetime:
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An immutable fact: the CloudEvents 1.0 envelope plus tidings' named extensions.

    Attributes:
        type: What happened, e.g. ``"order.placed"`` (required).
        source: Who says so, a URI-reference such as ``"/orders"`` (required).
        data: The payload: a JSON value (dict, list, str, number, bool, None) or bytes.
        id: Unique per source; a UUIDv7 string by default.
        specversion: Always ``"1.0"``.
        subject: What the event is about within the source (an order id, say).
        time: When it happened, timezone-aware; now (UTC) by default.
        datacontenttype: Media type of ``data``; None means JSON.
        dataschema: URI of the schema ``data`` adheres to.
        partitionkey: Key that keeps related events in order on a broker.
        correlationid: Id shared by every event of one business transaction.
        causationid: Id of the message that caused this one.
        traceparent: W3C trace context.
        tracestate: W3C trace context vendor state.
        extensions: Free-form extension attributes: names of 1 to 20 characters a-z0-9.
    """

    type: str
    source: str
    data: object = None
    id: str = msgspec.field(default_factory=new_event_id)
    specversion: str = SPECVERSION
    subject: str | None = None
    time: datetime | None = msgspec.field(default_factory=_now)
    datacontenttype: str | None = None
    dataschema: str | None = None
    partitionkey: str | None = None
    correlationid: str | None = None
    causationid: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    extensions: Mapping[str, ExtensionValue] = msgspec.field(default_factory=_no_extensions)

    def __post_init__(self) -> None:
        # Runs for every event read from a store, so the common case is kept cheap.
        if not (
            type(self.id) is str
            and self.id
            and type(self.source) is str
            and self.source
            and type(self.type) is str
            and self.type
        ):
            _explain_required(self)
        if self.specversion != SPECVERSION:
            raise InvalidAttributeError(
                "specversion", f"must be {SPECVERSION!r}, not {self.specversion!r}"
            )
        moment = self.time
        if moment is not None and (
            moment.__class__ is not datetime or moment.tzinfo is None or moment.utcoffset() is None
        ):
            _check_time(moment)
        # Optional attributes are None or text; subject, datacontenttype and dataschema non-empty.
        if (
            ((text := self.subject) is not None and (text.__class__ is not str or not text))
            or (
                (text := self.datacontenttype) is not None
                and (text.__class__ is not str or not text)
            )
            or ((text := self.dataschema) is not None and (text.__class__ is not str or not text))
            or ((text := self.partitionkey) is not None and text.__class__ is not str)
            or ((text := self.correlationid) is not None and text.__class__ is not str)
            or ((text := self.causationid) is not None and text.__class__ is not str)
            or ((text := self.traceparent) is not None and text.__class__ is not str)
            or ((text := self.tracestate) is not None and text.__class__ is not str)
        ):
            _explain_optional(self)
        extensions = self.extensions
        if extensions.__class__ is not _FrozenExtensions:
            if extensions.__class__ is dict and not extensions:
                _force_setattr(self, "extensions", _NO_EXTENSIONS)
            else:
                _freeze_extensions(self)

    def extension(self, name: str) -> ExtensionValue | None:
        """Return an extension attribute by name, named or free-form; None when absent."""
        if name in NAMED_EXTENSIONS:
            value: ExtensionValue | None = getattr(self, name)
            return value
        return self.extensions.get(name)

    def replace(self, **changes: object) -> Event:
        """Return a copy with some attributes changed (validated like a new event)."""
        return msgspec.structs.replace(self, **changes)

    def caused(self, *, type: str, source: str, data: object = None, **attrs: object) -> Event:
        """Return a new event caused by this one: same correlation id, causation id = this id."""
        attrs.setdefault("correlationid", self.correlationid or self.id)
        attrs.setdefault("causationid", self.id)
        return Event(type=type, source=source, data=data, **attrs)  # type: ignore[arg-type]

    def attributes(self) -> dict[str, ExtensionValue | datetime]:
        """Return every context and extension attribute that is set (never ``data``)."""
        out: dict[str, ExtensionValue | datetime] = {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": self.specversion,
        }
        for name in ("subject", "time", "datacontenttype", "dataschema", *_NAMED_ORDER):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extensions)
        return out

    def to_dict(self) -> dict[str, object]:
        """Return the CloudEvents JSON structured form as a dict of JSON values."""
        return self._structured(text_time=True)

    def to_json(self) -> bytes:
        """Return the event in the CloudEvents JSON structured format (UTF-8 bytes)."""
        try:
            # msgspec writes aware datetimes as RFC 3339 itself ("Z" for UTC).
            return _json_encoder.encode(self._structured(text_time=False))
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidAttributeError("data", f"is not JSON-serialisable: {exc}") from exc

    def _structured(self, *, text_time: bool) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": self.specversion,
        }
        if self.subject is not None:
            out["subject"] = self.subject
        if self.time is not None:
            out["time"] = format_time(self.time) if text_time else self.time
        if self.datacontenttype is not None:
            out["datacontenttype"] = self.datacontenttype
        if self.dataschema is not None:
            out["dataschema"] = self.dataschema
        for name in _NAMED_ORDER:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.extensions:
            out.update(self.extensions)
        data = self.data
        if isinstance(data, bytes | bytearray | memoryview):
            out["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
        elif data is not None:
            out["data"] = data
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, object]) -> Event:
        """Build an event from the CloudEvents JSON structured form already parsed to a dict."""
        if not isinstance(obj, Mapping):
            raise MalformedEventError("a CloudEvent in JSON must be an object")
        if not obj.keys() >= _REQUIRED:
            missing = sorted(_REQUIRED - obj.keys())[0]
            raise InvalidAttributeError(missing, "is required")
        known: dict[str, object] = {}
        extensions: dict[str, object] = {}
        for name, value in obj.items():
            if name in _ATTRIBUTES:
                known[name] = value
            elif name != "data" and name != "data_base64":
                extensions[name] = value
        if "time" in known:
            known["time"] = parse_time(known["time"])
        else:
            known["time"] = None
        # Types and extension names are checked once, by __post_init__.
        return cls(data=_data_from_json(obj), extensions=extensions, **known)  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        """Parse the CloudEvents JSON structured format; raise a tidings error if it is not."""
        try:
            obj = _json_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise MalformedEventError(f"not valid JSON: {exc}") from exc
        return cls.from_dict(obj)


_NAMED_ORDER: Final = ("partitionkey", "correlationid", "causationid", "traceparent", "tracestate")
_ATTRIBUTES: Final = CONTEXT_ATTRIBUTES | NAMED_EXTENSIONS
_REQUIRED: Final = frozenset({"id", "source", "type", "specversion"})


def _explain_required(event: Event) -> None:
    for name in ("id", "source", "type"):
        _require_text(name, getattr(event, name))


def _check_time(moment: object) -> None:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise InvalidAttributeError("time", "must be a timezone-aware datetime")


def _require_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidAttributeError(name, "is required and must be a non-empty string")


def _explain_optional(event: Event) -> None:
    for name in ("subject", "datacontenttype", "dataschema"):
        _check_optional_text(name, getattr(event, name), allow_empty=False)
    for name in _NAMED_ORDER:
        _check_optional_text(name, getattr(event, name), allow_empty=True)


def _check_optional_text(name: str, value: object, *, allow_empty: bool) -> None:
    if value is not None and (not isinstance(value, str) or not (value or allow_empty)):
        shape = "a string" if allow_empty else "a non-empty string"
        raise InvalidAttributeError(name, f"must be {shape} when set")


def _freeze_extensions(event: Event) -> None:
    extensions = event.extensions
    _check_extensions(extensions)
    # A private read-only copy: neither the caller's dict nor ours can change the fact.
    frozen = _FrozenExtensions(extensions) if extensions else _NO_EXTENSIONS
    _force_setattr(event, "extensions", frozen)


def _check_extensions(extensions: object) -> None:
    if not isinstance(extensions, Mapping):
        raise InvalidAttributeError("extensions", "must be a mapping of names to values")
    for name, value in extensions.items():
        if name not in _GOOD_NAMES:
            _check_extension_name(name)
        kind = value.__class__
        if kind is str or kind is bool or (kind is int and _INT32_MIN <= value <= _INT32_MAX):
            continue
        _extension_value(name, value)


def _check_extension_name(name: object) -> None:
    if not isinstance(name, str) or not _EXTENSION_NAME.fullmatch(name):
        raise InvalidAttributeError(
            str(name), "extension names are 1 to 20 characters, lower-case a-z and 0-9"
        )
    if name in _RESERVED:
        raise InvalidAttributeError(name, "is a reserved attribute, not an extension")
    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:  # names repeat: remember the checked ones
        _GOOD_NAMES.add(name)


def _extension_value(name: str, value: object) -> ExtensionValue:
    if not isinstance(value, str | int | bool):
        raise InvalidAttributeError(name, "extension values are strings, integers or booleans")
    if isinstance(value, int) and value not in _INT32:
        # CloudEvents Integer is a signed 32-bit value; other SDKs reject anything wider.
        raise InvalidAttributeError(name, f"integer {value} is outside the signed 32-bit range")
    return value


def _data_from_json(obj: Mapping[str, object]) -> object:
    if "data_base64" in obj:
        if "data" in obj:
            raise MalformedEventError("an event has either 'data' or 'data_base64', not both")
        encoded = obj["data_base64"]
        if not isinstance(encoded, str):
            raise InvalidAttributeError("data_base64", "must be a base64 string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII characters
            raise InvalidAttributeError("data_base64", f"is not valid base64: {exc}") from exc
    return obj.get("data")


def format_time(value: datetime) -> str:
    """Format a timezone-aware datetime as RFC 3339, with ``Z`` for UTC."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def parse_time(value: object) -> datetime:
    """Parse an RFC 3339 timestamp; raise `InvalidAttributeError` unless it has an offset."""
    if not isinstance(value, str):
        raise InvalidAttributeError("time", "must be an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidAttributeError("time", f"is not an RFC 3339 timestamp: {value!r}") from exc
    if parsed.utcoffset() is None:
        raise InvalidAttributeError("time", f"has no UTC offset: {value!r}")
    return parsed


def is_json_content_type(content_type: str | None) -> bool:
    """Return True when a media type means JSON (None counts as JSON, as in CloudEvents)."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")
