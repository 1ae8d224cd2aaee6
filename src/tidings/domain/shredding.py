"""Crypto-shredding: personal data encrypted per data subject, forgotten by deleting a key.

::

    shredder = Shredder(keys, types, store=store)
    event = await shredder.protect(types.to_event(registered, source="/crm", subject="c-1"))
    await store.append("customer-c-1", [event])  # personal fields are ciphertext now
    payload = await shredder.decode(event)  # the plaintext payload
    await shredder.forget("c-1")  # the key is gone ...
    payload = await shredder.decode(event)  # ... and personal fields read as Erased

Each personal field (see `tidings.domain.personal`) is encrypted alone with AES-256-GCM under
the subject's key, with a random 96-bit nonce; the associated data binds the ciphertext to the
event id and the field name, so it cannot be moved to another event or field. The stored value
is ``{"$erasable": base64(nonce + ciphertext), "kid": subject}``. Events are never rewritten:
after `Shredder.forget` the ciphertext stays where it was, and the hash chains still verify.

Snapshots of a state built from personal data are *sealed*: encrypted in layers with the key of
every subject whose data went in, so forgetting any of them makes the snapshot unreadable too
(the repository then replays the events, which now read as `Erased`).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from tidings.codecs import EventTypes, schema_version
from tidings.domain.keys import KeyStore
from tidings.domain.personal import ENCRYPTED, erased_value, personal_fields
from tidings.errors import CodecError, ConfigurationError
from tidings.events import Event
from tidings.eventstore.ports import ANY, EventStore

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:  # pragma: no cover - depends on the installed extras
    AESGCM = None  # type: ignore[assignment,misc]

__all__ = ["SUBJECT_FORGOTTEN", "Shredder"]

SUBJECT_FORGOTTEN: Final = "tidings.subject.forgotten"
"""The event type `Shredder.forget` appends to ``subject-<id>``; data ``{"subject": id}``."""

_NONCE: Final = 12
_json = msgspec.json.Encoder()
_seal_codec = msgspec.msgpack.Encoder()
_unseal_codec = msgspec.msgpack.Decoder(tuple[list[str], bytes])


class _Keys:
    """The keys one call needs, each read from the key store once."""

    def __init__(self, store: KeyStore, *, create: bool) -> None:
        self._store = store
        self._create = create
        self._cache: dict[str, bytes | None] = {}

    async def key(self, subject: str) -> bytes | None:
        if subject not in self._cache:
            store = self._store
            key = await (store.get_or_create(subject) if self._create else store.get(subject))
            self._cache[subject] = key
        return self._cache[subject]

    def found(self) -> set[str]:
        return {subject for subject, key in self._cache.items() if key is not None}


class Shredder:
    """Encrypts personal fields per data subject and forgets subjects by deleting their keys.

    Args:
        keys: Where the subjects' keys live (on the same backend as the events, usually).
        types: The registry of payload classes, which says which fields are personal.
        store: The event store that `forget` announces ``tidings.subject.forgotten`` events to
            (stream ``subject-<id>``), so projections can erase their copies; None: no event.
        source: The ``source`` attribute of those events.
    """

    def __init__(
        self,
        keys: KeyStore,
        types: EventTypes,
        *,
        store: EventStore | None = None,
        source: str = "/tidings/subjects",
    ) -> None:
        if AESGCM is None:  # pragma: no cover
            raise ConfigurationError(
                "crypto-shredding needs cryptography: pip install 'tidings[crypto]'", extra="crypto"
            )
        self.keys = keys
        self.types = types
        self.store = store
        self.source = source

    async def protect(self, event: Event) -> Event:
        """Return the event with its personal fields encrypted (unchanged when it has none)."""
        return (await self.protect_many([event]))[0][0]

    async def protect_many(self, events: Sequence[Event]) -> tuple[list[Event], set[str]]:
        """Encrypt the personal fields of events; return them and the subjects they name.

        Raises:
            CodecError: an event has personal data but no subject (neither a `SubjectId`
                field nor the event's ``subject`` attribute).
        """
        keys = _Keys(self.keys, create=True)
        out = [await self._protect(event, keys) for event in events]
        return out, keys.found()

    async def _protect(self, event: Event, keys: _Keys) -> Event:
        entry = self.types.lookup(event.type, schema_version(event))
        marked = personal_fields(entry.cls)
        data = event.data
        if not marked.fields or not isinstance(data, dict):
            return event
        subject = data.get(marked.subject) if marked.subject else event.subject
        if not isinstance(subject, str) or not subject:
            raise CodecError(f"event {event.id} ({event.type}) has personal data but no subject")
        key = await keys.key(subject)
        assert key is not None
        sealed = dict(data)
        for name in marked.fields:
            if _is_plain(sealed.get(name)):
                sealed[name] = _encrypt(key, subject, _field_aad(event.id, name), sealed[name])
        return event.replace(data=sealed)

    async def reveal(self, event: Event) -> Event:
        """Return the event with personal fields decrypted, or `Erased` where forgotten."""
        return (await self.reveal_many([event]))[0][0]

    async def reveal_many(self, events: Sequence[Event]) -> tuple[list[Event], set[str]]:
        """Decrypt the personal fields of events; return them and the subjects still known.

        Raises:
            CodecError: a ciphertext does not decrypt with its subject's key (it was altered,
                or moved from another event or field).
        """
        keys = _Keys(self.keys, create=False)
        out = [await self._reveal(event, keys) if _has_sealed(event) else event for event in events]
        return out, keys.found()

    async def _reveal(self, event: Event, keys: _Keys) -> Event:
        assert isinstance(event.data, dict)
        data = dict(event.data)
        for name, value in data.items():
            if isinstance(value, dict) and ENCRYPTED in value:
                subject = str(value.get("kid"))
                key = await keys.key(subject)
                aad = _field_aad(event.id, name)
                data[name] = erased_value(subject) if key is None else _decrypt(key, aad, value)
        return event.replace(data=data)

    async def decode(self, event: Event) -> object:
        """Return an event's payload, personal fields revealed (the projection's read)."""
        return self.types.from_event(await self.reveal(event))

    async def forget(self, subject: str) -> bool:
        """Forget a data subject: announce it, then delete its key; True if it had one.

        The ``tidings.subject.forgotten`` event is appended first, so a crash in between
        leaves the key in place and calling `forget` again finishes the job (projections may
        see the event twice and must treat it idempotently).
        """
        if self.store is not None:
            event = Event(
                type=SUBJECT_FORGOTTEN,
                source=self.source,
                subject=subject,
                data={"subject": subject},
            )
            await self.store.append(f"subject-{subject}", [event], expected_version=ANY)
        return await self.keys.forget(subject)

    async def seal(self, state: bytes, subjects: Iterable[str], aad: bytes) -> bytes | None:
        """Encrypt ``state`` in layers, one per subject key (sorted); see the module doc.

        Returns None when a subject has no key any more (it was forgotten after the state was
        built): such a state must not be stored.
        """
        kids = sorted(set(subjects))
        keys = _Keys(self.keys, create=False)
        box = state
        for subject in kids:
            key = await keys.key(subject)
            if key is None:
                return None
            box = _aead(key, aad, box)
        return _seal_codec.encode((kids, box))

    async def unseal(self, sealed: bytes, aad: bytes) -> tuple[bytes, set[str]] | None:
        """Return the state and its subjects, or None when a subject's key is gone.

        Raises:
            CodecError: ``sealed`` is not a sealed state, or does not decrypt.
        """
        try:
            kids, box = _unseal_codec.decode(sealed)
        except msgspec.DecodeError as exc:
            raise CodecError(f"not a sealed snapshot: {exc}") from exc
        keys = _Keys(self.keys, create=False)
        for subject in reversed(kids):
            key = await keys.key(subject)
            if key is None:
                return None
            box = _open(key, aad, box)
        return box, set(kids)


def _is_plain(value: object) -> bool:
    if value is None:
        return False
    return not (isinstance(value, dict) and (ENCRYPTED in value or "$erased" in value))


def _has_sealed(event: Event) -> bool:
    data = event.data
    if type(data) is not dict:
        return False
    return any(type(value) is dict and ENCRYPTED in value for value in data.values())


def _field_aad(event_id: str, name: str) -> bytes:
    return f"{event_id}\x00{name}".encode()


def _encrypt(key: bytes, subject: str, aad: bytes, value: object) -> dict[str, object]:
    box = _aead(key, aad, _json.encode(value))
    return {ENCRYPTED: base64.b64encode(box).decode("ascii"), "kid": subject}


def _decrypt(key: bytes, aad: bytes, value: dict[str, object]) -> object:
    text = value[ENCRYPTED]
    if not isinstance(text, str):
        raise CodecError("an encrypted personal value must be base64 text")
    return msgspec.json.decode(_open(key, aad, base64.b64decode(text)))


def _aead(key: bytes, aad: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, aad: bytes, box: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(box[:_NONCE], box[_NONCE:], aad)
    except InvalidTag as exc:
        raise CodecError("personal data does not decrypt: altered, or moved elsewhere") from exc
