"""The event and payloads the envelope benchmark measures, and the hand-written equivalents.

Not a benchmark module (the leading underscore keeps the runner from running it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Generic, TypeVar

import msgspec
import orjson

from tidings import Event, EventTypes
from tidings.ids import new_event_id

P = TypeVar("P")

SOURCE: Final = "/orders"
SUBJECT: Final = "ord-7f3a9c"
CORRELATION: Final = new_event_id()
CAUSATION: Final = new_event_id()
PAYLOAD: Final[dict[str, object]] = {
    "order_id": SUBJECT,
    "customer_id": "cus-0042",
    "status": "placed",
    "currency": "EUR",
    "quantity": 3,
    "total_cents": 12_950,
    "discount": 0.15,
    "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
    "placed_at": "2025-11-26T15:40:00.123456Z",
}


def make_event(data: object) -> Event:
    """Return the typical event: subject, correlation and causation ids, one extension."""
    return Event(
        type="order.placed",
        source=SOURCE,
        subject=SUBJECT,
        data=data,
        correlationid=CORRELATION,
        causationid=CAUSATION,
        extensions={"tenant": "acme"},
    )


EVENT: Final = make_event(PAYLOAD)
DOC: Final = EVENT.to_dict()
RAW: Final = EVENT.to_json()

ENCODER: Final = msgspec.json.Encoder()
DECODER: Final = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class LineDC:
    """One order line (dataclass)."""

    sku: str
    qty: int


@dataclass(frozen=True, slots=True)
class OrderPlacedDC:
    """The typical payload as a dataclass."""

    order_id: str
    customer_id: str
    status: str
    currency: str
    quantity: int
    total_cents: int
    discount: float
    lines: list[LineDC]
    placed_at: str


class LineS(msgspec.Struct, frozen=True):
    """One order line (Struct)."""

    sku: str
    qty: int


class OrderPlacedS(msgspec.Struct, frozen=True):
    """The typical payload as a msgspec Struct."""

    order_id: str
    customer_id: str
    status: str
    currency: str
    quantity: int
    total_cents: int
    discount: float
    lines: list[LineS]
    placed_at: str


class Envelope(msgspec.Struct, Generic[P], kw_only=True):
    """What a hand-written msgspec decoder of the same event would use."""

    id: str
    source: str
    type: str
    specversion: str
    data: P
    subject: str | None = None
    time: datetime | None = None
    correlationid: str | None = None
    causationid: str | None = None
    tenant: str | None = None
    schemaversion: int = 1


def _envelope_type(cls: type[object]) -> type[Envelope[object]]:
    """Return ``Envelope[cls]``: the envelope Struct with its data decoded as ``cls``."""
    return Envelope[cls]  # type: ignore[valid-type]


def _envelope_dict(payload: object) -> dict[str, object]:
    """The event a hand-written encoder builds: new id and time, same attributes as tidings."""
    return {
        "id": new_event_id(),
        "source": SOURCE,
        "type": "order.placed",
        "specversion": "1.0",
        "subject": SUBJECT,
        "time": datetime.now(UTC),
        "correlationid": CORRELATION,
        "causationid": CAUSATION,
        "tenant": "acme",
        "schemaversion": 1,
        "data": payload,
    }


class Typed:
    """One kind of payload class, and every encoder and decoder of it the cases compare."""

    def __init__(self, label: str, payload: object, line_cls: type[object]) -> None:
        self.label, self.payload, self.line_cls = label, payload, line_cls
        self.cls = type(payload)
        self.make: Callable[..., object] = self.cls  # builds a payload from fields, unvalidated
        self.types = EventTypes()
        self.types.add(self.cls, "order.placed")
        self.envelope = _envelope_type(self.cls)
        self.decoder = msgspec.json.Decoder(self.envelope)
        self.data_decoders = {("order.placed", 1): msgspec.json.Decoder(self.cls)}
        self.raw = self.tidings_encode(payload)

    def tidings_encode(self, payload: object) -> bytes:
        """EventTypes.to_event(payload) + to_json()."""
        event = self.types.to_event(
            payload,
            source=SOURCE,
            subject=SUBJECT,
            correlationid=CORRELATION,
            causationid=CAUSATION,
            extensions={"tenant": "acme"},
        )
        return event.to_json()

    @staticmethod
    def msgspec_encode(payload: object) -> bytes:
        """msgspec.json.encode of the envelope dict holding the payload object."""
        return ENCODER.encode(_envelope_dict(payload))

    @staticmethod
    def orjson_encode(payload: object) -> bytes:
        """orjson.dumps of the envelope dict (Structs through default=msgspec.to_builtins)."""
        return orjson.dumps(
            _envelope_dict(payload), default=msgspec.to_builtins, option=orjson.OPT_UTC_Z
        )

    def tidings_decode(self, raw: bytes) -> object:
        """Event.from_json() + EventTypes.from_event()."""
        return self.types.from_event(Event.from_json(raw))

    def msgspec_decode(self, raw: bytes) -> object:
        """msgspec.json.decode(raw, type=Envelope[Payload]): one pass, validated."""
        return self.decoder.decode(raw).data

    def two_pass_decode(self, raw: bytes) -> object:
        """Envelope[msgspec.Raw] first, then the data with the class its type names."""
        envelope = RAW_ENVELOPE.decode(raw)
        return self.data_decoders[(envelope.type, envelope.schemaversion)].decode(envelope.data)

    def orjson_convert_decode(self, raw: bytes) -> object:
        """orjson.loads + msgspec.convert(..., Envelope[Payload]): validated like msgspec."""
        return msgspec.convert(orjson.loads(raw), self.envelope).data

    def orjson_init_decode(self, raw: bytes) -> object:
        """orjson.loads + Payload(**fields) by hand: no validation at all."""
        doc = orjson.loads(raw)
        data = doc.pop("data")
        lines = [self.line_cls(**line) for line in data.pop("lines")]
        doc["time"] = datetime.fromisoformat(doc["time"])
        return Envelope(data=self.make(**data, lines=lines), **doc).data  # the bare class: fast

    def check(self) -> None:
        """Raise unless every encoder gives the same event and every decoder the payload."""
        for encode in (self.msgspec_encode, self.orjson_encode):
            theirs, ours = json.loads(encode(self.payload)), json.loads(self.raw)
            for volatile in ("id", "time"):
                del theirs[volatile], ours[volatile]
            if theirs != ours:
                raise RuntimeError(f"{self.label}: {encode.__name__} makes another event")
        decoders = (self.tidings_decode, self.msgspec_decode, self.two_pass_decode)
        for decode in (*decoders, self.orjson_convert_decode, self.orjson_init_decode):
            if decode(self.raw) != self.payload:
                raise RuntimeError(f"{self.label}: {decode.__name__} gives another payload")


RAW_ENVELOPE: Final = msgspec.json.Decoder(Envelope[msgspec.Raw])
