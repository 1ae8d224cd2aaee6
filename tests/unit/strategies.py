"""Hypothesis strategies for valid `Event`s, and what binary mode does to them.

`events()` draws any valid event; `events(binary=True)` keeps to the data and content type
pairs that binary mode carries without loss (bytes with a non-text type, text with a text type,
JSON values with a JSON type). `after_binary_mode` says what such an event reads back as.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from tidings.events import CONTEXT_ATTRIBUTES, NAMED_EXTENSIONS, Event, ExtensionValue

JSON_CONTENT_TYPES = (
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.tidings.order+json",
    "text/json",
)
TEXT_CONTENT_TYPES = ("text/plain", "text/plain; charset=utf-8", "text/csv")
BYTES_CONTENT_TYPES = ("application/octet-stream", "image/png", "application/avro")
OCTET_STREAM = "application/octet-stream"

_RESERVED = CONTEXT_ATTRIBUTES | NAMED_EXTENSIONS | {"data"}

names = st.text(min_size=1)
"""Non-empty text: ids, sources, types, subjects (any Unicode, no lone surrogates)."""

offsets = st.just(UTC) | st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
"""UTC and every whole-minute offset RFC 3339 can write."""

times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

extension_names = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(
    lambda name: name not in _RESERVED
)
extension_values: st.SearchStrategy[ExtensionValue] = (
    st.text() | st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.booleans()
)
extensions = st.dictionaries(extension_names, extension_values, max_size=4)

_lossless_payloads = st.one_of(
    st.tuples(json_values, st.sampled_from(JSON_CONTENT_TYPES)),
    st.tuples(st.text(), st.sampled_from(TEXT_CONTENT_TYPES)),
    st.tuples(st.binary(), st.sampled_from((None, *BYTES_CONTENT_TYPES))),
)
_any_payloads = st.one_of(
    _lossless_payloads,
    st.tuples(st.binary(), st.sampled_from(TEXT_CONTENT_TYPES)),
    st.tuples(st.text(), st.sampled_from(BYTES_CONTENT_TYPES)),
)


@st.composite
def events(draw: st.DrawFn, *, binary: bool = False) -> Event:
    """Draw a valid event; with ``binary``, only data that binary mode carries unchanged."""
    data, content_type = draw(_lossless_payloads if binary else _any_payloads)
    optional = st.none() | names
    named_extension = st.none() | st.text()
    return Event(
        id=draw(names),
        source=draw(names),
        type=draw(names),
        subject=draw(optional),
        time=draw(st.none() | times),
        datacontenttype=content_type,
        dataschema=draw(optional),
        data=data,
        partitionkey=draw(named_extension),
        correlationid=draw(named_extension),
        causationid=draw(named_extension),
        traceparent=draw(named_extension),
        tracestate=draw(named_extension),
        extensions=draw(extensions),
    )


def header_text(value: ExtensionValue) -> str:
    """How tidings writes an extension value in a header: booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def after_binary_mode(event: Event, text: Callable[[ExtensionValue], str] = header_text) -> Event:
    """Return what ``event`` reads back as after a binary-mode trip (headers plus body).

    Headers are strings, so extension integers and booleans come back as text (the spec allows
    it); bytes without a media type travel as ``application/octet-stream``; an empty body means
    no data.
    """
    content_type = event.datacontenttype
    if content_type is None and isinstance(event.data, bytes):
        content_type = OCTET_STREAM
    data = event.data
    if data in (b"", "") and content_type not in JSON_CONTENT_TYPES:
        data = None
    return event.replace(
        datacontenttype=content_type,
        data=data,
        extensions={name: text(value) for name, value in event.extensions.items()},
    )


def assert_same_event(actual: Event, expected: Event) -> None:
    """Assert two events are equal, and that their times keep the same UTC offset too."""
    assert actual == expected
    if expected.time is not None:
        assert actual.time is not None
        assert actual.time.utcoffset() == expected.time.utcoffset()
