"""Binary mode: attributes in ``ce-`` (HTTP) and ``ce_`` (Kafka) headers, data in the body."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given

from tidings.bindings import from_http, from_kafka, to_http, to_kafka
from tidings.errors import InvalidAttributeError, MalformedEventError
from tidings.events import Event

from .strategies import OCTET_STREAM, after_binary_mode, assert_same_event, events

HTTP_REQUIRED = {
    "ce-id": "e-1",
    "ce-source": "/orders",
    "ce-type": "order.placed",
    "ce-specversion": "1.0",
}
KAFKA_REQUIRED = [(name.replace("-", "_"), value.encode()) for name, value in HTTP_REQUIRED.items()]


def _event(**fields: object) -> Event:
    return Event(type="order.placed", source="/orders", **fields)  # type: ignore[arg-type]


# HTTP


def test_to_http_prefixes_attributes_with_ce_dash() -> None:
    headers, _ = to_http(_event(id="e-1", time=None))
    assert headers == {
        "ce-id": "e-1",
        "ce-source": "/orders",
        "ce-type": "order.placed",
        "ce-specversion": "1.0",
    }


def test_to_http_puts_datacontenttype_in_content_type() -> None:
    headers, _ = to_http(_event(data="hi", datacontenttype="text/plain"))
    assert (headers["content-type"], "ce-datacontenttype" in headers) == ("text/plain", False)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("a b", "a%20b"),
        ('say "hi"', "say%20%22hi%22"),
        ("100%", "100%25"),
        ("café", "caf%C3%A9"),
        ("line\nbreak", "line%0Abreak"),
        ("/orders?x=1&y=2", "/orders?x=1&y=2"),
    ],
)
def test_to_http_percent_encodes_space_quote_percent_and_non_ascii(
    value: str, encoded: str
) -> None:
    headers, _ = to_http(_event(subject=value))
    assert headers["ce-subject"] == encoded


def test_to_http_writes_booleans_and_integers_as_text() -> None:
    headers, _ = to_http(_event(extensions={"urgent": True, "retries": 3}))
    assert (headers["ce-urgent"], headers["ce-retries"]) == ("true", "3")


def test_to_http_writes_time_as_rfc3339() -> None:
    headers, _ = to_http(_event(time=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)))
    assert headers["ce-time"] == "2024-01-02T03:04:05Z"


def test_to_http_writes_json_data_as_json_body() -> None:
    _, body = to_http(_event(data={"n": 1}))
    assert body == b'{"n":1}'


def test_to_http_writes_text_data_as_utf8_body() -> None:
    _, body = to_http(_event(data="café", datacontenttype="text/plain"))
    assert body == "café".encode()


def test_to_http_labels_bytes_without_content_type_as_octet_stream() -> None:
    headers, body = to_http(_event(data=b"\x00\xff"))
    assert (headers["content-type"], body) == (OCTET_STREAM, b"\x00\xff")


def test_to_http_rejects_data_that_is_not_json() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        to_http(_event(data={"n": object()}))
    assert caught.value.attribute == "data"


def test_from_http_reads_headers_in_any_case() -> None:
    headers = {name.upper(): value for name, value in HTTP_REQUIRED.items()}
    assert from_http({**headers, "Content-Type": "text/plain"}, b"hi").data == "hi"


def test_from_http_percent_decodes_values() -> None:
    assert from_http({**HTTP_REQUIRED, "ce-subject": "caf%C3%A9%20%25"}, b"").subject == "café %"


def test_from_http_reads_empty_body_as_no_data() -> None:
    assert from_http(HTTP_REQUIRED, b"").data is None


def test_from_http_reads_body_without_content_type_as_json() -> None:
    assert from_http(HTTP_REQUIRED, b'{"n": 1}').data == {"n": 1}


def test_from_http_reads_unknown_media_type_as_bytes() -> None:
    event = from_http({**HTTP_REQUIRED, "content-type": "image/png"}, b"\x89PNG")
    assert event.data == b"\x89PNG"


def test_from_http_ignores_headers_without_the_prefix() -> None:
    event = from_http({**HTTP_REQUIRED, "x-request-id": "r-1"}, b"")
    assert event.extensions == {}


def test_from_http_rejects_headers_without_specversion() -> None:
    headers = {k: v for k, v in HTTP_REQUIRED.items() if k != "ce-specversion"}
    with pytest.raises(MalformedEventError):
        from_http(headers, b"")


@pytest.mark.parametrize("name", ["ce-id", "ce-source", "ce-type"])
def test_from_http_rejects_missing_required_attribute(name: str) -> None:
    headers = {k: v for k, v in HTTP_REQUIRED.items() if k != name}
    with pytest.raises(InvalidAttributeError) as caught:
        from_http(headers, b"")
    assert caught.value.attribute == name.removeprefix("ce-")


def test_from_http_rejects_wrong_specversion() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        from_http({**HTTP_REQUIRED, "ce-specversion": "0.3"}, b"")
    assert caught.value.attribute == "specversion"


def test_from_http_rejects_time_without_offset() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        from_http({**HTTP_REQUIRED, "ce-time": "2024-01-02T03:04:05"}, b"")
    assert caught.value.attribute == "time"


def test_from_http_rejects_bad_extension_name() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        from_http({**HTTP_REQUIRED, "ce-tenant_id": "acme"}, b"")
    assert caught.value.attribute == "tenant_id"


def test_from_http_rejects_body_that_is_not_the_json_it_claims() -> None:
    with pytest.raises(MalformedEventError):
        from_http({**HTTP_REQUIRED, "content-type": "application/json"}, b"{nope")


def test_from_http_rejects_text_body_that_is_not_utf8() -> None:
    with pytest.raises(MalformedEventError):
        from_http({**HTTP_REQUIRED, "content-type": "text/plain"}, b"\xff\xfe")


def test_from_http_rejects_percent_encoding_that_is_not_utf8() -> None:
    with pytest.raises(MalformedEventError, match="ce-subject"):
        from_http({**HTTP_REQUIRED, "ce-subject": "%FF"}, b"")


@given(events(binary=True))
def test_http_round_trip_preserves_event(event: Event) -> None:
    headers, body = to_http(event)
    assert_same_event(from_http(headers, body), after_binary_mode(event))


@given(events(binary=True))
def test_http_ce_headers_are_printable_ascii(event: Event) -> None:
    headers, _ = to_http(event)
    for name, value in headers.items():
        if name.startswith("ce-"):
            assert all(0x21 <= ord(c) < 0x7F for c in value)


# Kafka


def test_to_kafka_prefixes_attributes_with_ce_underscore() -> None:
    headers, _ = to_kafka(_event(id="e-1", time=None))
    assert headers == KAFKA_REQUIRED


def test_to_kafka_writes_utf8_values_without_percent_encoding() -> None:
    headers, _ = to_kafka(_event(subject="café 100%"))
    assert ("ce_subject", "café 100%".encode()) in headers


def test_to_kafka_puts_datacontenttype_in_content_type() -> None:
    headers, _ = to_kafka(_event(data="hi", datacontenttype="text/plain"))
    assert ("content-type", b"text/plain") in headers


def test_to_kafka_sends_partitionkey_as_a_header() -> None:
    headers, _ = to_kafka(_event(partitionkey="o-1"))
    assert ("ce_partitionkey", b"o-1") in headers


def test_to_kafka_labels_bytes_without_content_type_as_octet_stream() -> None:
    headers, value = to_kafka(_event(data=b"\x00\xff"))
    assert (("content-type", OCTET_STREAM.encode()) in headers, value) == (True, b"\x00\xff")


def test_from_kafka_reads_none_value_as_no_data() -> None:
    assert from_kafka(KAFKA_REQUIRED, None).data is None


def test_from_kafka_reads_none_header_as_empty_text() -> None:
    assert from_kafka([*KAFKA_REQUIRED, ("ce_tenant", None)], b"").extensions == {"tenant": ""}


def test_from_kafka_rejects_headers_without_specversion() -> None:
    with pytest.raises(MalformedEventError):
        from_kafka(KAFKA_REQUIRED[:3], b"")


def test_from_kafka_rejects_header_that_is_not_utf8() -> None:
    with pytest.raises(MalformedEventError, match="ce_subject"):
        from_kafka([*KAFKA_REQUIRED, ("ce_subject", b"\xff")], b"")


def test_from_kafka_rejects_text_value_that_is_not_utf8() -> None:
    with pytest.raises(MalformedEventError):
        from_kafka([*KAFKA_REQUIRED, ("content-type", b"text/plain")], b"\xff")


def test_from_kafka_rejects_missing_required_attribute() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        from_kafka(KAFKA_REQUIRED[1:], b"")
    assert caught.value.attribute == "id"


@given(events(binary=True))
def test_kafka_round_trip_preserves_event(event: Event) -> None:
    headers, value = to_kafka(event)
    assert_same_event(from_kafka(headers, value), after_binary_mode(event))
