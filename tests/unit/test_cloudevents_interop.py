"""Interop with the official CloudEvents SDK (``cloudevents.core``), both ways.

Each direction is checked for the JSON structured format and for the HTTP and Kafka binary
bindings. The SDK gives every event a time when it has none, reads bytes in a non-JSON body as
text when they decode as UTF-8, writes booleans in headers as ``True``/``False`` and, in binary
mode, JSON-encodes only dict data; the helpers below say so rather than hide it.
"""

from __future__ import annotations

from typing import Any

import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.bindings import kafka as sdk_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given
from hypothesis import strategies as st

from tidings.bindings import from_http, from_kafka, to_http, to_kafka
from tidings.errors import InvalidAttributeError
from tidings.events import Event, is_json_content_type

from .strategies import after_binary_mode, assert_same_event, events

FORMAT = JSONFormat()


def _to_sdk(event: Event) -> CloudEvent:
    return CloudEvent(dict(event.attributes()), event.data)  # type: ignore[arg-type]


def _sdk_attributes(sdk_event: Any, expected: Event) -> dict[str, object]:
    attributes = dict(sdk_event.get_attributes())
    if expected.time is None:
        attributes.pop("time")  # the SDK stamps a time on every event it builds
    return attributes


def _assert_same_data(actual: object, expected: object) -> None:
    if isinstance(expected, bytes) and isinstance(actual, str):
        actual = actual.encode()  # the SDK reads a non-JSON body as text when it can
    assert actual == expected


def _with_time(event: Event) -> bool:
    return event.time is not None


def _sdk_binary_writable(event: Event) -> bool:
    """True when the SDK writes the event's data as a body tidings reads back unchanged."""
    data = event.data
    if isinstance(data, bytes):
        return event.datacontenttype is not None  # else the body would be taken for JSON
    if isinstance(data, str):
        return not is_json_content_type(event.datacontenttype)  # the SDK does not quote it
    return data is None or isinstance(data, dict)  # the SDK writes other JSON with str()


_sdk_binary_events = events(binary=True).filter(_with_time).filter(_sdk_binary_writable)


# tidings writes, the SDK reads


@given(events())
def test_sdk_reads_tidings_json_attributes(event: Event) -> None:
    sdk_event = FORMAT.read(None, event.to_json())
    assert _sdk_attributes(sdk_event, event) == event.attributes()


@given(events())
def test_sdk_reads_tidings_json_data(event: Event) -> None:
    assert FORMAT.read(None, event.to_json()).get_data() == event.data


@given(events(binary=True))
def test_sdk_reads_tidings_http_binary_attributes(event: Event) -> None:
    headers, body = to_http(event)
    sdk_event = sdk_http.from_binary(sdk_http.HTTPMessage(headers=headers, body=body), FORMAT)
    assert _sdk_attributes(sdk_event, event) == after_binary_mode(event).attributes()


@given(events(binary=True))
def test_sdk_reads_tidings_http_binary_data(event: Event) -> None:
    headers, body = to_http(event)
    sdk_event = sdk_http.from_binary(sdk_http.HTTPMessage(headers=headers, body=body), FORMAT)
    _assert_same_data(sdk_event.get_data(), after_binary_mode(event).data)


@given(events(binary=True))
def test_sdk_reads_tidings_kafka_binary_attributes(event: Event) -> None:
    headers, value = to_kafka(event)
    message = sdk_kafka.KafkaMessage(headers=dict(headers), key=None, value=value)
    sdk_event = sdk_kafka.from_binary(message, FORMAT)
    assert _sdk_attributes(sdk_event, event) == after_binary_mode(event).attributes()


@given(events(binary=True))
def test_sdk_reads_tidings_kafka_binary_data(event: Event) -> None:
    headers, value = to_kafka(event)
    message = sdk_kafka.KafkaMessage(headers=dict(headers), key=None, value=value)
    _assert_same_data(
        sdk_kafka.from_binary(message, FORMAT).get_data(), after_binary_mode(event).data
    )


@pytest.mark.parametrize("name", ["subject", "datacontenttype", "dataschema"])
@given(value=st.text(max_size=3))
def test_sdk_reads_every_optional_attribute_tidings_accepts(name: str, value: str) -> None:
    try:
        event = Event(type="t", source="/s", **{name: value})  # type: ignore[arg-type]
    except InvalidAttributeError:
        return
    assert FORMAT.read(None, event.to_json()).get_attributes()[name] == value


def test_sdk_reads_tidings_json_booleans_as_booleans() -> None:
    event = Event(type="t", source="/s", extensions={"urgent": True})
    assert FORMAT.read(None, event.to_json()).get_extension("urgent") is True


def test_sdk_takes_kafka_key_from_tidings_partitionkey_header() -> None:
    headers, value = to_kafka(Event(type="t", source="/s", partitionkey="o-1"))
    message = sdk_kafka.KafkaMessage(headers=dict(headers), key=None, value=value)
    assert sdk_kafka.from_binary(message, FORMAT).get_extension("partitionkey") == "o-1"


# The SDK writes, tidings reads


@given(events().filter(_with_time))
def test_tidings_reads_sdk_json(event: Event) -> None:
    assert_same_event(Event.from_json(FORMAT.write(_to_sdk(event))), event)


@given(_sdk_binary_events)
def test_tidings_reads_sdk_http_binary(event: Event) -> None:
    message = sdk_http.to_binary(_to_sdk(event), FORMAT)
    read = from_http(message.headers, message.body)
    assert_same_event(read, after_binary_mode(event, text=str))


@given(_sdk_binary_events)
def test_tidings_reads_sdk_kafka_binary(event: Event) -> None:
    message = sdk_kafka.to_binary(_to_sdk(event), FORMAT)
    read = from_kafka(message.headers.items(), message.value)
    assert_same_event(read, after_binary_mode(event, text=str))


def test_tidings_reads_sdk_default_id_and_time() -> None:
    sdk_event = CloudEvent({"type": "t", "source": "/s"}, {"n": 1})
    read = Event.from_json(FORMAT.write(sdk_event))
    assert (read.id, read.time, read.data) == (sdk_event.get_id(), sdk_event.get_time(), {"n": 1})


def test_tidings_reads_sdk_binary_booleans_as_text() -> None:
    sdk_event = CloudEvent({"type": "t", "source": "/s", "urgent": True})
    message = sdk_http.to_binary(sdk_event, FORMAT)
    assert from_http(message.headers, message.body).extension("urgent") == "True"
