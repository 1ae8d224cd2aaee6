"""CloudEvents binary-mode mappings: attributes in headers, data in the body.

HTTP puts each attribute in a ``ce-<name>`` header (values percent-encoded as the HTTP
binding requires); Kafka puts them in ``ce_<name>`` record headers (UTF-8, not
percent-encoded) and ``datacontenttype`` in ``content-type`` in both. The body is the data:
bytes as they are, text as UTF-8, anything else as JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final
from urllib.parse import quote, unquote

import msgspec

from tidings.errors import InvalidAttributeError, MalformedEventError
from tidings.events import (
    CONTEXT_ATTRIBUTES,
    NAMED_EXTENSIONS,
    Event,
    format_time,
    is_json_content_type,
    parse_time,
)

__all__ = ["from_http", "from_kafka", "kafka_key", "to_http", "to_kafka"]

_HTTP_PREFIX: Final = "ce-"
_KAFKA_PREFIX: Final = "ce_"
_CONTENT_TYPE: Final = "content-type"
# Printable ASCII except space, double quote and percent travels as it is (HTTP binding 3.1.3.2).
_HTTP_SAFE: Final = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')


def to_http(event: Event) -> tuple[dict[str, str], bytes]:
    """Return the HTTP binary-mode headers and body for an event."""
    headers = {
        _HTTP_PREFIX + name: quote(_text(value), safe=_HTTP_SAFE)
        for name, value in _header_attributes(event)
    }
    content_type = _content_type(event)
    if content_type is not None:
        headers[_CONTENT_TYPE] = content_type
    return headers, _body(event)


def from_http(headers: Mapping[str, str], body: bytes) -> Event:
    """Build an event from HTTP binary-mode headers (any case) and body."""
    attributes = {
        name.lower()[len(_HTTP_PREFIX) :]: _unquote(name, value)
        for name, value in headers.items()
        if name.lower().startswith(_HTTP_PREFIX)
    }
    content_type = _lookup(headers, _CONTENT_TYPE)
    return _event(attributes, content_type, body)


def to_kafka(event: Event) -> tuple[list[tuple[str, bytes]], bytes]:
    """Return the Kafka binary-mode record headers and value for an event.

    The record key is the event's ``partitionkey``; it is also sent as a ``ce_`` header so the
    event reads back whole.
    """
    headers = [
        (_KAFKA_PREFIX + name, _text(value).encode()) for name, value in _header_attributes(event)
    ]
    content_type = _content_type(event)
    if content_type is not None:
        headers.append((_CONTENT_TYPE, content_type.encode()))
    return headers, _body(event)


def kafka_key(event: Event) -> bytes | None:
    """Return the Kafka record key for an event: its ``partitionkey`` in UTF-8, if any."""
    return None if event.partitionkey is None else event.partitionkey.encode()


def from_kafka(
    headers: Iterable[tuple[str, bytes | None]],
    value: bytes | None,
    *,
    key: bytes | None = None,
) -> Event:
    """Build an event from Kafka binary-mode record headers and value.

    A record key stands in for ``partitionkey`` when no ``ce_partitionkey`` header is present.
    """
    attributes: dict[str, str] = {}
    if key is not None:
        attributes["partitionkey"] = _decode(key, "record key")
    content_type = None
    for name, raw in headers:
        text = _decode(raw or b"", f"header {name!r}")
        lowered = name.lower()
        if lowered.startswith(_KAFKA_PREFIX):
            attributes[lowered[len(_KAFKA_PREFIX) :]] = text
        elif lowered == _CONTENT_TYPE:
            content_type = text
    return _event(attributes, content_type, value or b"")


def _header_attributes(event: Event) -> Iterable[tuple[str, object]]:
    for name, value in event.attributes().items():
        if name != "datacontenttype":
            yield name, value


def _content_type(event: Event) -> str | None:
    # Bytes without a media type would read back as JSON; say what they are.
    if event.datacontenttype is None and isinstance(event.data, bytes | bytearray | memoryview):
        return "application/octet-stream"
    return event.datacontenttype


def _text(value: object) -> str:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _body(event: Event) -> bytes:
    data = event.data
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str) and not is_json_content_type(event.datacontenttype):
        return data.encode()
    try:
        return msgspec.json.encode(data)
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidAttributeError("data", f"is not JSON-serialisable: {exc}") from exc


def _lookup(headers: Mapping[str, str], wanted: str) -> str | None:
    for name, value in headers.items():
        if name.lower() == wanted:
            return value
    return None


def _event(attributes: dict[str, str], content_type: str | None, body: bytes) -> Event:
    if "specversion" not in attributes:
        raise MalformedEventError("no ce specversion header: not a binary-mode CloudEvent")
    known: dict[str, object] = {}
    extensions: dict[str, str] = {}
    for name, value in attributes.items():
        if name in _KNOWN:
            known[name] = value
        else:
            extensions[name] = value
    known["time"] = parse_time(known["time"]) if "time" in known else None
    for name in ("id", "source", "type"):
        if name not in known:
            raise InvalidAttributeError(name, "is required")
    data = _data(content_type, body)
    return Event(datacontenttype=content_type, data=data, extensions=extensions, **known)  # type: ignore[arg-type]


def _data(content_type: str | None, body: bytes) -> object:
    if not body:
        return None
    if is_json_content_type(content_type):
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise MalformedEventError(f"body is not the JSON its content type says: {exc}") from exc
    if content_type is not None and content_type.lower().startswith("text/"):
        return _decode(body, "the text body")
    return body


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEventError(f"{what} is not UTF-8: {exc}") from exc


def _unquote(name: str, value: str) -> str:
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError as exc:
        raise MalformedEventError(
            f"header {name!r} percent-encodes bytes that are not UTF-8"
        ) from exc


_KNOWN: Final = (CONTEXT_ATTRIBUTES | NAMED_EXTENSIONS) - {"datacontenttype"}
