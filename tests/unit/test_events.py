"""The envelope: defaults, immutability, validation and the JSON structured format."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest
from hypothesis import given

from tidings.errors import InvalidAttributeError, MalformedEventError, TidingsError
from tidings.events import Event, format_time, is_json_content_type, parse_time
from tidings.ids import uuid7_time_ms

from .strategies import assert_same_event, events

REQUIRED = {"id": "e-1", "source": "/orders", "type": "order.placed", "specversion": "1.0"}


def _json(**fields: object) -> bytes:
    return json.dumps({**REQUIRED, **fields}).encode()


def _json_without(name: str) -> bytes:
    return json.dumps({k: v for k, v in REQUIRED.items() if k != name}).encode()


def _event(**fields: object) -> Event:
    return Event(type="order.placed", source="/orders", **fields)  # type: ignore[arg-type]


# Defaults


def test_id_defaults_to_uuid7_string() -> None:
    assert UUID(_event().id).version == 7


def test_id_defaults_to_a_fresh_value_per_event() -> None:
    assert _event().id != _event().id


def test_time_defaults_to_aware_utc_now() -> None:
    before = datetime.now(UTC)
    event = _event()
    assert event.time is not None
    assert event.time.utcoffset() == timedelta(0)
    assert before <= event.time <= datetime.now(UTC)


def test_specversion_defaults_to_1_0() -> None:
    assert _event().specversion == "1.0"


def test_optional_attributes_default_to_none() -> None:
    event = _event()
    assert (event.subject, event.datacontenttype, event.data, event.partitionkey) == (
        None,
        None,
        None,
        None,
    )


def test_default_id_time_matches_event_time() -> None:
    event = _event()
    assert event.time is not None
    assert abs(uuid7_time_ms(event.id) - event.time.timestamp() * 1000) < 1000


# Immutability


def test_setting_an_attribute_raises_attribute_error() -> None:
    event = _event()
    with pytest.raises(AttributeError):
        event.type = "order.cancelled"  # type: ignore[misc]


def test_setting_an_extension_raises_type_error() -> None:
    event = _event(extensions={"tenant": "acme"})
    with pytest.raises(TypeError):
        event.extensions["tenant"] = "other"  # type: ignore[index]


def test_updating_extensions_raises_type_error() -> None:
    event = _event(extensions={"tenant": "acme"})
    with pytest.raises(TypeError):
        event.extensions.update(tenant="other")  # type: ignore[attr-defined]


def test_extensions_ignore_later_changes_to_the_callers_dict() -> None:
    given_extensions: dict[str, str | int | bool] = {"tenant": "acme"}
    event = _event(extensions=given_extensions)
    given_extensions["Bad_Name"] = "x"
    assert event.extensions == {"tenant": "acme"}


def test_replace_returns_a_changed_copy() -> None:
    event = _event(subject="o-1")
    assert event.replace(subject="o-2").subject == "o-2"


def test_replace_leaves_the_original_unchanged() -> None:
    event = _event(subject="o-1")
    event.replace(subject="o-2")
    assert event.subject == "o-1"


def test_replace_validates_the_changes() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        _event().replace(source="")
    assert caught.value.attribute == "source"


def test_event_survives_pickle() -> None:
    event = _event(data={"n": 1}, extensions={"tenant": "acme"})
    assert pickle.loads(pickle.dumps(event)) == event


# Accessors


def test_extension_returns_named_extension() -> None:
    assert _event(partitionkey="o-1").extension("partitionkey") == "o-1"


def test_extension_returns_free_form_extension() -> None:
    assert _event(extensions={"tenant": "acme"}).extension("tenant") == "acme"


def test_extension_returns_none_when_absent() -> None:
    assert _event().extension("tenant") is None


def test_attributes_omit_unset_attributes_and_data() -> None:
    event = _event(id="e-1", time=None, data={"n": 1})
    assert event.attributes() == {
        "id": "e-1",
        "source": "/orders",
        "type": "order.placed",
        "specversion": "1.0",
    }


def test_caused_sets_causation_id_to_the_cause() -> None:
    cause = _event()
    assert cause.caused(type="order.shipped", source="/shipping").causationid == cause.id


def test_caused_inherits_correlation_id() -> None:
    cause = _event(correlationid="c-1")
    assert cause.caused(type="order.shipped", source="/shipping").correlationid == "c-1"


def test_caused_starts_correlation_at_cause_without_one() -> None:
    cause = _event()
    assert cause.caused(type="order.shipped", source="/shipping").correlationid == cause.id


# Invalid construction


@pytest.mark.parametrize("name", ["id", "source", "type"])
@pytest.mark.parametrize("value", ["", None, 7])
def test_constructor_rejects_missing_or_empty_required_attribute(name: str, value: object) -> None:
    fields: dict[str, object] = {"id": "e-1", "source": "/orders", "type": "order.placed"}
    fields[name] = value
    with pytest.raises(InvalidAttributeError) as caught:
        Event(**fields)  # type: ignore[arg-type]
    assert caught.value.attribute == name


@pytest.mark.parametrize("version", ["0.3", "1", "", "2.0"])
def test_constructor_rejects_wrong_specversion(version: str) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        _event(specversion=version)
    assert caught.value.attribute == "specversion"


def test_constructor_rejects_naive_time() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        _event(time=datetime(2024, 1, 1, 12, 0))
    assert caught.value.attribute == "time"


def test_constructor_rejects_time_given_as_text() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        _event(time="2024-01-01T12:00:00Z")
    assert caught.value.attribute == "time"


@pytest.mark.parametrize("name", ["subject", "datacontenttype", "dataschema"])
@pytest.mark.parametrize("value", ["", 5, b"x"])
def test_constructor_rejects_optional_attribute_that_is_not_non_empty_text(
    name: str, value: object
) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        _event(**{name: value})
    assert caught.value.attribute == name


@pytest.mark.parametrize(
    "name", ["partitionkey", "correlationid", "causationid", "traceparent", "tracestate"]
)
def test_constructor_rejects_named_extension_that_is_not_text(name: str) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        _event(**{name: 42})
    assert caught.value.attribute == name


@pytest.mark.parametrize(
    "name",
    [
        "Tenant",
        "a" * 21,
        "tenant_id",
        "tenant-id",
        "",
        "data",
        "data_base64",
        "id",
        "time",
        "specversion",
        "partitionkey",
    ],
)
def test_constructor_rejects_bad_extension_name(name: str) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        _event(extensions={name: "x"})
    assert caught.value.attribute == name


@pytest.mark.parametrize("value", [1.5, [1], None, {"a": 1}, b"x", 2**31, -(2**31) - 1])
def test_constructor_rejects_bad_extension_value(value: object) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        _event(extensions={"tenant": value})
    assert caught.value.attribute == "tenant"


@pytest.mark.parametrize("value", [2**31 - 1, -(2**31), True, "", "x" * 1000])
def test_constructor_accepts_extension_values_at_the_edges(value: str | int | bool) -> None:
    assert _event(extensions={"tenant": value}).extensions == {"tenant": value}


def test_constructor_accepts_extension_name_of_twenty_characters() -> None:
    assert _event(extensions={"a" * 20: 1}).extension("a" * 20) == 1


def test_constructor_rejects_extensions_that_are_not_a_mapping() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        _event(extensions=[("tenant", "acme")])
    assert caught.value.attribute == "extensions"


def test_to_json_rejects_data_that_is_not_json() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        _event(data={"when": object()}).to_json()
    assert caught.value.attribute == "data"


@pytest.mark.parametrize("error", [InvalidAttributeError, MalformedEventError])
def test_event_errors_are_tidings_and_value_errors(error: type[Exception]) -> None:
    assert issubclass(error, TidingsError)
    assert issubclass(error, ValueError)


# Reading JSON


@pytest.mark.parametrize("raw", [b"", b"{", b'{"id": }', b"\xff\xfe", "not json"])
def test_from_json_rejects_malformed_json(raw: bytes | str) -> None:
    with pytest.raises(MalformedEventError):
        Event.from_json(raw)


@pytest.mark.parametrize("raw", [b"[]", b'"event"', b"42", b"null", b"true"])
def test_from_json_rejects_json_that_is_not_an_object(raw: bytes) -> None:
    with pytest.raises(MalformedEventError):
        Event.from_json(raw)


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
def test_from_json_rejects_missing_required_attribute(name: str) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        Event.from_json(_json_without(name))
    assert caught.value.attribute == name


@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_from_json_rejects_empty_required_attribute(name: str) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        Event.from_json(_json(**{name: ""}))
    assert caught.value.attribute == name


def test_from_json_rejects_wrong_specversion() -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        Event.from_json(_json(specversion="0.3"))
    assert caught.value.attribute == "specversion"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id", 1),
        ("source", None),
        ("type", ["order.placed"]),
        ("specversion", 1.0),
        ("subject", 5),
        ("datacontenttype", {"type": "json"}),
        ("partitionkey", False),
    ],
)
def test_from_json_rejects_attribute_that_is_not_a_string(name: str, value: object) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        Event.from_json(_json(**{name: value}))
    assert caught.value.attribute == name


@pytest.mark.parametrize("value", ["2024-01-01T12:00:00", "yesterday", 1704110400, None])
def test_from_json_rejects_time_without_offset_or_not_a_timestamp(value: object) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        Event.from_json(_json(time=value))
    assert caught.value.attribute == "time"


@pytest.mark.parametrize("name", ["Tenant", "tenant_id", "a" * 21, ""])
def test_from_json_rejects_bad_extension_name(name: str) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        Event.from_json(_json(**{name: "x"}))
    assert caught.value.attribute == name


@pytest.mark.parametrize("value", [1.5, [1], None, {"a": 1}, 2**40])
def test_from_json_rejects_bad_extension_value(value: object) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        Event.from_json(_json(tenant=value))
    assert caught.value.attribute == "tenant"


def test_from_json_rejects_both_data_and_data_base64() -> None:
    with pytest.raises(MalformedEventError, match="data_base64"):
        Event.from_json(_json(data="x", data_base64="eA=="))


@pytest.mark.parametrize("value", ["not base64!", "eA=", "eA", "é", 17, None])
def test_from_json_rejects_bad_base64(value: object) -> None:
    with pytest.raises(InvalidAttributeError) as caught:
        Event.from_json(_json(data_base64=value))
    assert caught.value.attribute == "data_base64"


def test_from_json_accepts_text() -> None:
    assert Event.from_json(_json().decode()).id == "e-1"


def test_from_json_leaves_time_unset_when_absent() -> None:
    assert Event.from_json(_json()).time is None


def test_from_json_reads_data_base64_as_bytes() -> None:
    assert Event.from_json(_json(data_base64="AAH/")).data == b"\x00\x01\xff"


def test_from_json_reads_unknown_attributes_as_extensions() -> None:
    assert Event.from_json(_json(tenant="acme", retries=3)).extensions == {
        "tenant": "acme",
        "retries": 3,
    }


def test_from_dict_rejects_a_non_mapping() -> None:
    with pytest.raises(MalformedEventError):
        Event.from_dict(["id", "e-1"])  # type: ignore[arg-type]


# Writing JSON


def test_to_json_writes_bytes_as_data_base64() -> None:
    written = json.loads(_event(data=b"\x00\x01\xff").to_json())
    assert (written["data_base64"], "data" in written) == ("AAH/", False)


def test_to_json_writes_utc_time_with_z() -> None:
    written = json.loads(_event(time=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)).to_json())
    assert written["time"] == "2024-01-02T03:04:05Z"


def test_to_json_keeps_a_non_utc_offset() -> None:
    tz = timezone(timedelta(hours=5, minutes=30))
    written = json.loads(_event(time=datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz)).to_json())
    assert written["time"] == "2024-01-02T03:04:05+05:30"


def test_to_json_writes_extensions_at_top_level() -> None:
    written = json.loads(_event(partitionkey="o-1", extensions={"tenant": "acme"}).to_json())
    assert (written["partitionkey"], written["tenant"]) == ("o-1", "acme")


def test_to_json_omits_data_when_none() -> None:
    assert "data" not in json.loads(_event().to_json())


def test_to_json_keeps_falsy_data() -> None:
    assert json.loads(_event(data=0).to_json())["data"] == 0


@given(events())
def test_json_round_trip_preserves_event(event: Event) -> None:
    assert_same_event(Event.from_json(event.to_json()), event)


@given(events())
def test_dict_round_trip_preserves_event(event: Event) -> None:
    assert_same_event(Event.from_dict(event.to_dict()), event)


# Time and media type helpers


def test_parse_time_reads_z_as_utc() -> None:
    assert parse_time("2024-01-02T03:04:05Z") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_parse_time_keeps_offset() -> None:
    parsed = parse_time("2024-01-02T03:04:05.123456-07:00")
    assert parsed.utcoffset() == timedelta(hours=-7)


def test_format_time_writes_microseconds() -> None:
    value = datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert format_time(value) == "2024-01-02T03:04:05.000006Z"


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "APPLICATION/JSON", "application/cloudevents+json", "text/json"],
)
def test_is_json_content_type_accepts_json_media_types(content_type: str | None) -> None:
    assert is_json_content_type(content_type)


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", "json"])
def test_is_json_content_type_rejects_other_media_types(content_type: str) -> None:
    assert not is_json_content_type(content_type)
