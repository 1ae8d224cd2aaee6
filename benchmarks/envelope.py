"""Envelope encode and decode per second: tidings against raw msgspec, orjson and json.

Every raw case does the same work as the tidings case it is compared with, and the module
checks that on import: the same input gives the same JSON bytes or the same values.

- ``encode/*``, ``decode/*``: `Event.to_json` / `Event.from_json` of a typical event against
  encoding the dict `Event.to_dict` returns (and decoding the bytes `to_json` returns).
- ``typed-encode/*``, ``typed-decode/*``: `EventTypes.to_event` + ``to_json`` and
  ``from_json`` + `EventTypes.from_event` of a dataclass and of a msgspec Struct payload,
  against one-call msgspec (a typed envelope Struct) and orjson (+ msgspec.convert, or
  unvalidated ``Class(**fields)``). The tidings and raw encoders all make a new UUIDv7 id and
  timestamp per event; ``id/*`` shows what that costs.
- ``fields/*``: curves of encode and decode against the number of payload fields.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from functools import partial
from typing import Final, TypeVar

import msgspec
import orjson

from benchmarks._envelope_fixtures import (
    DECODER,
    DOC,
    ENCODER,
    EVENT,
    PAYLOAD,
    RAW,
    LineDC,
    LineS,
    OrderPlacedDC,
    OrderPlacedS,
    Typed,
    make_event,
)
from benchmarks.api import Case, Cases
from tidings import Event
from tidings.ids import new_event_id

PACKAGES: Final = ("msgspec", "orjson")
CASES = Cases()

T = TypeVar("T")


def _times(n: int, fn: Callable[[T], object], arg: T) -> None:
    """The loop every case uses, so loop overhead is the same for all."""
    for _ in itertools.repeat(None, n):
        fn(arg)


def _json_dumps(doc: object) -> bytes:
    return json.dumps(doc).encode()


# Events per measured run, so that one run takes roughly 0.1 to 0.5 s.
FAST: Final = 400_000  # ~0.5 us per event: raw encode and decode
MEDIUM: Final = 150_000  # ~1.5 to 3 us: raw typed decode, typed encode, ids
SLOW: Final = 50_000  # ~4 us and more: tidings, json, unvalidated typed decode

# --- untyped: Event.to_json / from_json against the same dict and bytes -------------------


@CASES.add(
    "encode/tidings", size=SLOW, baseline="encode/msgspec", peers=("encode/orjson", "encode/json")
)
def encode_tidings(n: int) -> None:
    """Event.to_json() of the typical event."""
    _times(n, Event.to_json, EVENT)


@CASES.add("encode/msgspec", size=FAST, peers=("encode/orjson",))
def encode_msgspec(n: int) -> None:
    """msgspec.json.Encoder().encode(event.to_dict())."""
    _times(n, ENCODER.encode, DOC)


@CASES.add("encode/orjson", size=FAST)
def encode_orjson(n: int) -> None:
    """orjson.dumps(event.to_dict())."""
    _times(n, orjson.dumps, DOC)


@CASES.add("encode/json", size=SLOW)
def encode_json(n: int) -> None:
    """json.dumps(event.to_dict()).encode() (bytes, like the others)."""
    _times(n, _json_dumps, DOC)


@CASES.add(
    "decode/tidings", size=SLOW, baseline="decode/msgspec", peers=("decode/orjson", "decode/json")
)
def decode_tidings(n: int) -> None:
    """Event.from_json() of the typical event's bytes."""
    _times(n, Event.from_json, RAW)


@CASES.add("decode/msgspec", size=FAST, peers=("decode/orjson",))
def decode_msgspec(n: int) -> None:
    """msgspec.json.Decoder().decode(bytes) to a dict."""
    _times(n, DECODER.decode, RAW)


@CASES.add("decode/orjson", size=FAST)
def decode_orjson(n: int) -> None:
    """orjson.loads(bytes) to a dict."""
    _times(n, orjson.loads, RAW)


@CASES.add("decode/json", size=SLOW)
def decode_json(n: int) -> None:
    """json.loads(bytes) to a dict."""
    _times(n, json.loads, RAW)


def _check_untyped() -> None:
    if not ENCODER.encode(DOC) == orjson.dumps(DOC) == RAW:
        raise RuntimeError("msgspec, orjson and Event.to_json disagree on the bytes")
    if not DECODER.decode(RAW) == orjson.loads(RAW) == json.loads(RAW) == DOC:
        raise RuntimeError("the decoders disagree on the dict")
    if Event.from_json(RAW) != EVENT:
        raise RuntimeError("Event.from_json(to_json()) is not the event")


_check_untyped()

# --- typed payloads: a dataclass and a Struct -------------------------------------------------


def _add(
    name: str,
    fn: Callable[[T], object],
    arg: T,
    *,
    size: int,
    baseline: str | None = None,
    peers: tuple[str, ...] = (),
) -> None:
    doc = (fn.__doc__ or "").strip().splitlines()
    run = partial(_times, fn=fn, arg=arg)
    description = doc[0] if doc else ""
    CASES.append(
        Case(name=name, run=run, size=size, baseline=baseline, peers=peers, description=description)
    )


def _declare_typed(kind: Typed) -> None:
    enc, dec, k = "typed-encode/", "typed-decode/", kind.label
    _add(
        f"{enc}tidings.{k}",
        kind.tidings_encode,
        kind.payload,
        size=SLOW,
        baseline=f"{enc}msgspec.{k}",
        peers=(f"{enc}orjson.{k}",),
    )
    _add(
        f"{enc}msgspec.{k}",
        kind.msgspec_encode,
        kind.payload,
        size=MEDIUM,
        peers=(f"{enc}orjson.{k}",),
    )
    _add(f"{enc}orjson.{k}", kind.orjson_encode, kind.payload, size=MEDIUM)
    _add(
        f"{dec}tidings.{k}",
        kind.tidings_decode,
        kind.raw,
        size=SLOW,
        baseline=f"{dec}msgspec.{k}",
        peers=(f"{dec}orjson+convert.{k}",),
    )
    _add(
        f"{dec}msgspec.{k}",
        kind.msgspec_decode,
        kind.raw,
        size=MEDIUM,
        peers=(f"{dec}orjson+convert.{k}", f"{dec}orjson+init.{k}"),
    )
    _add(
        f"{dec}msgspec-2pass.{k}",
        kind.two_pass_decode,
        kind.raw,
        size=MEDIUM,
        baseline=f"{dec}msgspec.{k}",
        peers=(f"{dec}orjson+convert.{k}",),
    )
    _add(f"{dec}orjson+convert.{k}", kind.orjson_convert_decode, kind.raw, size=MEDIUM)
    _add(f"{dec}orjson+init.{k}", kind.orjson_init_decode, kind.raw, size=SLOW)


for _kind in (
    Typed("dataclass", msgspec.convert(PAYLOAD, OrderPlacedDC), LineDC),
    Typed("struct", msgspec.convert(PAYLOAD, OrderPlacedS), LineS),
):
    _kind.check()
    _declare_typed(_kind)

# --- event ids ----------------------------------------------------------------------------


def _call(fn: Callable[[], object]) -> object:
    return fn()


def _uuid4() -> str:
    return str(uuid.uuid4())


@CASES.add("id/new_event_id", size=MEDIUM, baseline="id/uuid4")
def id_new_event_id(n: int) -> None:
    """tidings.ids.new_event_id(): a UUIDv7 string."""
    _times(n, _call, new_event_id)


@CASES.add("id/uuid4", size=MEDIUM)
def id_uuid4(n: int) -> None:
    """str(uuid.uuid4()) from the standard library."""
    _times(n, _call, _uuid4)


# --- curves: encode and decode against the number of payload fields --------------------------

FIELD_COUNTS: Final = (1, 4, 16, 64, 256)
_VALUES: Final[tuple[object, ...]] = ("some text", 12_345, 3.25, [1, 2, 3])


class FieldsCurve:
    """The event, dict and bytes for a payload of ``fields`` fields (str, int, float, list)."""

    def __init__(self) -> None:
        self.event, self.doc, self.raw = EVENT, DOC, RAW

    def setup(self, fields: int) -> None:
        """Build the event for this many payload fields (untimed)."""
        self.event = make_event({f"field{i}": _VALUES[i % 4] for i in range(fields)})
        self.doc, self.raw = self.event.to_dict(), self.event.to_json()

    @staticmethod
    def events(fields: int, *, fast: bool) -> int:
        """Events per run at this payload size, so that runs take 0.05 to 0.5 s."""
        return 4_000_000 // (fields + (20 if fast else 120))


CURVE: Final = FieldsCurve()


def _curve(
    name: str,
    fn: Callable[[T], object],
    arg: Callable[[], T],
    *,
    fast: bool,
    baseline: str | None = None,
    peers: tuple[str, ...] = (),
) -> None:
    """Declare a curve case: ``fn(arg())`` for many events, at each payload size."""

    def run(fields: int) -> int:
        count = CURVE.events(fields, fast=fast)
        _times(count, fn, arg())
        return count

    verb = name.split("/")[1].split(".")[0]
    CASES.append(
        Case(
            name=name,
            run=run,
            sizes=FIELD_COUNTS,
            x_label="payload fields",
            plot=f"{verb}-by-fields",
            setup=CURVE.setup,
            baseline=baseline,
            peers=peers,
            description=f"{name.split('.')[-1]} {verb} of an event with N payload fields",
        )
    )


def _event() -> Event:
    return CURVE.event


def _doc() -> dict[str, object]:
    return CURVE.doc


def _raw() -> bytes:
    return CURVE.raw


_ENC, _DEC = "fields/encode.", "fields/decode."
_curve(
    f"{_ENC}tidings",
    Event.to_json,
    _event,
    fast=False,
    baseline=f"{_ENC}msgspec",
    peers=(f"{_ENC}orjson",),
)
_curve(f"{_ENC}msgspec", ENCODER.encode, _doc, fast=True, peers=(f"{_ENC}orjson",))
_curve(f"{_ENC}orjson", orjson.dumps, _doc, fast=True)
_curve(
    f"{_DEC}tidings",
    Event.from_json,
    _raw,
    fast=False,
    baseline=f"{_DEC}msgspec",
    peers=(f"{_DEC}orjson",),
)
_curve(f"{_DEC}msgspec", DECODER.decode, _raw, fast=True, peers=(f"{_DEC}orjson",))
_curve(f"{_DEC}orjson", orjson.loads, _raw, fast=True)
