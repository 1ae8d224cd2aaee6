"""Marking personal data in payloads, and the value that replaces it once erased.

::

    @types.register("customer.registered")
    @dataclass(frozen=True)
    class CustomerRegistered:
        customer_id: Annotated[str, SubjectId]  # whose data this is (default: event subject)
        name: Annotated[str | Erased, Personal]  # encrypted with that subject's key
        country: str  # not personal: stored as is

A field marked `Personal` must admit `Erased` in its type: after the subject is forgotten its
value decodes as ``Erased(subject=...)`` instead of the data, so a reader can never mistake
the gap for a value. Personal fields are top-level fields of dataclasses or msgspec Structs
(a renamed Struct field is found under its encoded name).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Final

import msgspec

from tidings.errors import CodecError

__all__ = [
    "ENCRYPTED",
    "Erased",
    "Personal",
    "PersonalFields",
    "SubjectId",
    "erased_value",
    "personal_fields",
]

ENCRYPTED: Final = "$erasable"
"""The key of the object that replaces a personal value in stored data."""


class Personal:
    """Marks a payload field as personal data: ``Annotated[str | Erased, Personal]``."""


class SubjectId:
    """Marks the payload field naming the data subject: ``Annotated[str, SubjectId]``."""


class Erased(msgspec.Struct, frozen=True, rename={"subject": "$erased"}):
    """What a personal value reads as after its subject was forgotten.

    Attributes:
        subject: The data subject whose key was deleted.
    """

    subject: str


def erased_value(subject: str) -> dict[str, object]:
    """Return the JSON form of `Erased` for ``subject`` (what decoders turn into `Erased`)."""
    return {"$erased": subject}


@dataclass(frozen=True, slots=True)
class PersonalFields:
    """Where a payload class keeps personal data, by encoded field name.

    Attributes:
        fields: The personal fields.
        subject: The field naming the data subject, or None (then the event's subject is).
    """

    fields: tuple[str, ...] = ()
    subject: str | None = None


_FOUND: dict[type[object], PersonalFields] = {}


def personal_fields(cls: type[object]) -> PersonalFields:
    """Return the personal fields of a payload class (cached per class).

    Raises:
        CodecError: a personal field's type does not admit `Erased`, or two fields are marked
            `SubjectId`.
    """
    found = _FOUND.get(cls)
    if found is None:
        found = _FOUND[cls] = _inspect(cls)
    return found


def _inspect(cls: type[object]) -> PersonalFields:
    hints = _hints(cls)
    names = _encode_names(cls)
    personal: list[str] = []
    subjects: list[str] = []
    for name, hint in hints.items():
        marks = _marks(hint)
        if Personal in marks:
            _require_erased(cls, name, hint)
            personal.append(names.get(name, name))
        if SubjectId in marks:
            subjects.append(names.get(name, name))
    if len(subjects) > 1:
        raise CodecError(f"{cls.__qualname__}: only one field may be marked SubjectId")
    return PersonalFields(tuple(personal), subjects[0] if subjects else None)


def _hints(cls: type[object]) -> dict[str, object]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except (NameError, TypeError) as exc:
        raise CodecError(f"cannot read the annotations of {cls.__qualname__}: {exc}") from exc


def _encode_names(cls: type[object]) -> dict[str, str]:
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return {f.name: f.encode_name for f in msgspec.structs.fields(cls)}
    if dataclasses.is_dataclass(cls):
        return {f.name: f.name for f in dataclasses.fields(cls)}
    return {}


def _marks(hint: object) -> set[type[object]]:
    if typing.get_origin(hint) is not Annotated:
        return set()
    found: set[type[object]] = set()
    for meta in hint.__metadata__:  # type: ignore[attr-defined]
        for mark in (Personal, SubjectId):
            if meta is mark or isinstance(meta, mark):
                found.add(mark)
    return found


def _require_erased(cls: type[object], name: str, hint: object) -> None:
    inner = typing.get_args(hint)[0]
    if typing.get_origin(inner) in (typing.Union, types.UnionType) and Erased in typing.get_args(
        inner
    ):
        return
    raise CodecError(
        f"{cls.__qualname__}.{name} is Personal, so its type must admit Erased once the data "
        f"is forgotten: declare it as Annotated[{_show(inner)} | Erased, Personal]"
    )


def _show(tp: object) -> str:
    return getattr(tp, "__name__", repr(tp))
