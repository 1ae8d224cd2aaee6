"""Typed payloads: dataclasses, msgspec Structs and pydantic models registered by event type."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.bindings import from_http, to_http
from tidings.codecs import SCHEMA_VERSION, EventTypes, schema_version
from tidings.errors import CodecError, UnknownEventTypeError
from tidings.events import Event


@dataclass(frozen=True)
class PlacedDataclass:
    order_id: str
    subtotal: Decimal
    placed_at: datetime
    customer: UUID


class PlacedStruct(msgspec.Struct, frozen=True):
    order_id: str
    subtotal: Decimal
    placed_at: datetime
    customer: UUID


class PlacedModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    order_id: str
    subtotal: Decimal
    placed_at: datetime
    customer: UUID


@dataclass(frozen=True)
class PlacedV1:
    order_id: str


@dataclass(frozen=True)
class PlacedV2:
    order_id: str
    currency: str


PAYLOAD_CLASSES = [PlacedDataclass, PlacedStruct, PlacedModel]

placed_fields = st.fixed_dictionaries(
    {
        "order_id": st.text(),
        "subtotal": st.decimals(allow_nan=False, allow_infinity=False, places=2),
        "placed_at": st.datetimes(timezones=st.just(UTC)),
        "customer": st.uuids(),
    }
)


def _registry(cls: type[object], name: str = "order.placed", version: int = 1) -> EventTypes:
    types = EventTypes()
    types.add(cls, name, version=version)
    return types


def _payload(cls: type[object]) -> object:
    return cls(
        order_id="o-1",
        subtotal=Decimal("9.50"),
        placed_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        customer=UUID(int=7),
    )


# Encoding and decoding


@pytest.mark.parametrize("cls", PAYLOAD_CLASSES)
def test_to_event_sets_type_from_registration(cls: type[object]) -> None:
    assert _registry(cls).to_event(_payload(cls), source="/orders").type == "order.placed"


@pytest.mark.parametrize("cls", PAYLOAD_CLASSES)
def test_to_event_writes_json_values_as_data(cls: type[object]) -> None:
    event = _registry(cls).to_event(_payload(cls), source="/orders")
    assert event.data == {
        "order_id": "o-1",
        "subtotal": "9.50",
        "placed_at": "2024-01-02T03:04:05Z",
        "customer": "00000000-0000-0000-0000-000000000007",
    }


@pytest.mark.parametrize("cls", PAYLOAD_CLASSES)
def test_to_event_sets_schemaversion_extension(cls: type[object]) -> None:
    event = _registry(cls, version=3).to_event(_payload(cls), source="/orders")
    assert event.extensions[SCHEMA_VERSION] == 3


def test_to_event_keeps_other_attributes_and_extensions() -> None:
    types = _registry(PlacedV1)
    event = types.to_event(
        PlacedV1("o-1"), source="/orders", subject="o-1", extensions={"tenant": "acme"}
    )
    assert (event.subject, event.extensions) == ("o-1", {"tenant": "acme", SCHEMA_VERSION: 1})


@pytest.mark.parametrize("cls", PAYLOAD_CLASSES)
def test_from_event_decodes_to_registered_class(cls: type[object]) -> None:
    types = _registry(cls)
    payload = _payload(cls)
    assert types.from_event(types.to_event(payload, source="/orders")) == payload


@pytest.mark.parametrize("cls", PAYLOAD_CLASSES)
@given(fields=placed_fields)
def test_payload_survives_json_round_trip(cls: type[object], fields: dict[str, object]) -> None:
    types = _registry(cls)
    payload = cls(**fields)
    event = Event.from_json(types.to_event(payload, source="/orders").to_json())
    assert types.from_event(event) == payload


def test_payload_survives_http_binary_round_trip() -> None:
    types = _registry(PlacedV1, version=2)
    event = from_http(*to_http(types.to_event(PlacedV1("o-1"), source="/orders")))
    assert types.from_event(event) == PlacedV1("o-1")


def test_decode_as_returns_payload_of_expected_class() -> None:
    types = _registry(PlacedV1)
    event = types.to_event(PlacedV1("o-1"), source="/orders")
    assert types.decode_as(event, PlacedV1) == PlacedV1("o-1")


def test_decode_as_rejects_payload_of_another_class() -> None:
    types = _registry(PlacedV1)
    event = types.to_event(PlacedV1("o-1"), source="/orders")
    with pytest.raises(CodecError):
        types.decode_as(event, PlacedV2)


# Versions


def _two_versions() -> EventTypes:
    types = EventTypes()
    types.register("order.placed", version=1)(PlacedV1)
    types.register("order.placed", version=2)(PlacedV2)
    return types


def test_each_version_decodes_with_its_own_class() -> None:
    types = _two_versions()
    old = types.to_event(PlacedV1("o-1"), source="/orders")
    new = types.to_event(PlacedV2("o-2", "EUR"), source="/orders")
    assert (types.from_event(old), types.from_event(new)) == (
        PlacedV1("o-1"),
        PlacedV2("o-2", "EUR"),
    )


def test_event_without_schemaversion_decodes_as_version_one() -> None:
    event = Event(type="order.placed", source="/orders", data={"order_id": "o-1"})
    assert _two_versions().from_event(event) == PlacedV1("o-1")


def test_schemaversion_from_header_text_decodes_with_its_class() -> None:
    event = Event(
        type="order.placed",
        source="/orders",
        data={"order_id": "o-2", "currency": "EUR"},
        extensions={SCHEMA_VERSION: "2"},
    )
    assert _two_versions().from_event(event) == PlacedV2("o-2", "EUR")


def test_lookup_without_version_returns_latest() -> None:
    assert _two_versions().lookup("order.placed").cls is PlacedV2


def test_schema_version_defaults_to_one() -> None:
    assert schema_version(Event(type="t", source="/s")) == 1


@pytest.mark.parametrize("value", ["two", True])
def test_schema_version_rejects_value_that_is_not_an_integer(value: str | bool) -> None:
    with pytest.raises(CodecError):
        schema_version(Event(type="t", source="/s", extensions={SCHEMA_VERSION: value}))


# Registration


def test_register_returns_the_class_unchanged() -> None:
    assert EventTypes().register("order.placed")(PlacedV1) is PlacedV1


def test_registry_lists_registered_names() -> None:
    types = _two_versions()
    types.add(PlacedStruct, "order.imported")
    assert (types.names(), "order.placed" in types, "order.paid" in types) == (
        ["order.imported", "order.placed"],
        True,
        False,
    )


def test_registering_same_class_twice_under_same_name_is_allowed() -> None:
    types = _registry(PlacedV1)
    assert types.add(PlacedV1, "order.placed").cls is PlacedV1


def test_registering_another_class_under_a_taken_name_raises_codec_error() -> None:
    types = _registry(PlacedV1)
    with pytest.raises(CodecError):
        types.add(PlacedV2, "order.placed", version=1)


def test_registering_a_class_under_a_second_name_raises_codec_error() -> None:
    types = _registry(PlacedV1)
    with pytest.raises(CodecError):
        types.add(PlacedV1, "order.created")


@pytest.mark.parametrize(("name", "version"), [("", 1), ("order.placed", 0)])
def test_register_rejects_empty_name_or_version_below_one(name: str, version: int) -> None:
    with pytest.raises(CodecError):
        EventTypes().register(name, version=version)


# Failures


def test_from_event_of_unknown_type_raises_unknown_event_type_error() -> None:
    with pytest.raises(UnknownEventTypeError) as caught:
        EventTypes().from_event(Event(type="order.placed", source="/orders"))
    assert caught.value.event_type == "order.placed"


def test_from_event_of_unknown_version_raises_unknown_event_type_error() -> None:
    event = Event(type="order.placed", source="/orders", extensions={SCHEMA_VERSION: 9})
    with pytest.raises(UnknownEventTypeError) as caught:
        _registry(PlacedV1).from_event(event)
    assert caught.value.version == 9


def test_to_event_of_unregistered_class_raises_unknown_event_type_error() -> None:
    with pytest.raises(UnknownEventTypeError):
        EventTypes().to_event(PlacedV1("o-1"), source="/orders")


def test_unknown_event_type_error_is_a_codec_error() -> None:
    assert issubclass(UnknownEventTypeError, CodecError)


@pytest.mark.parametrize("cls", PAYLOAD_CLASSES)
@pytest.mark.parametrize(
    "data",
    [
        None,
        "o-1",
        b"o-1",
        {"order_id": "o-1"},
        {
            "order_id": 1,
            "subtotal": "x",
            "placed_at": "2024-01-02T03:04:05Z",
            "customer": "00000000-0000-0000-0000-000000000007",
        },
    ],
)
def test_from_event_with_invalid_data_raises_codec_error(cls: type[object], data: object) -> None:
    event = Event(type="order.placed", source="/orders", data=data)
    with pytest.raises(CodecError) as caught:
        _registry(cls).from_event(event)
    assert not isinstance(caught.value, msgspec.MsgspecError | pydantic.ValidationError)


def test_to_event_with_unencodable_payload_raises_codec_error() -> None:
    types = _registry(PlacedV1)
    with pytest.raises(CodecError):
        types.to_event(PlacedV1(object()), source="/orders")  # type: ignore[arg-type]
