"""Crypto-shredding: personal fields encrypted per subject, erased by forgetting the subject."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest

from tidings.adapters.memory.keys import MemoryKeyStore
from tidings.codecs import EventTypes
from tidings.domain import (
    SUBJECT_FORGOTTEN,
    Erased,
    EveryNEvents,
    Personal,
    Shredder,
    SubjectId,
)
from tidings.domain.personal import personal_fields
from tidings.errors import CodecError

from .bank import STYLES, AccountOpened, Deposit, Open, State, Style, types
from .conftest import Backend

NAME = "Ada Lovelace"
IBAN = "DE89370400440532013000"


@pytest.fixture(params=STYLES, ids=lambda s: s.name)
def style(request: pytest.FixtureRequest) -> Style:
    return request.param  # type: ignore[no-any-return]


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def shredder_of(backend: Backend, registry: EventTypes = types) -> Shredder:
    return Shredder(backend.keys, registry, store=backend.store)


async def open_account(backend: Backend, style: Style, **options: Any) -> tuple[Any, str]:
    repo = style.repository(backend, shredder=shredder_of(backend), **options)
    id = new_id()
    await style.run(repo, id, Open(NAME, IBAN))
    await style.run(repo, id, Deposit(40))
    return repo, id


async def raw(backend: Backend, stream_id: str) -> list[bytes]:
    return [msgspec.json.encode(r.event) for r in await backend.store.read_stream(stream_id)]


# -- every backend, both styles ---------------------------------------------------------------


async def test_personal_fields_are_stored_encrypted(backend: Backend, style: Style) -> None:
    repo, id = await open_account(backend, style)
    [opened, deposited] = await backend.store.read_stream(repo.stream_id(id))
    assert set(opened.event.data["owner"]) == {"$erasable", "kid"}
    assert opened.event.data["owner"]["kid"] == id
    assert deposited.event.data == {"cents": 40}
    assert not any(NAME.encode() in envelope for envelope in await raw(backend, repo.stream_id(id)))


async def test_load_reveals_personal_fields(backend: Backend, style: Style) -> None:
    repo, id = await open_account(backend, style)
    state = style.state(await repo.load(id))
    assert (state.owner, state.iban, state.balance) == (NAME, IBAN, 40)


async def test_forgotten_subject_reads_as_erased(backend: Backend, style: Style) -> None:
    repo, id = await open_account(backend, style)
    assert await shredder_of(backend).forget(id) is True
    state = style.state(await repo.load(id))
    assert state == State(True, Erased(id), Erased(id), 40)


async def test_forget_announces_the_subject_for_projections(backend: Backend) -> None:
    id = new_id()
    await shredder_of(backend).forget(id)
    [record] = await backend.store.read_stream(f"subject-{id}")
    event = record.event
    assert (event.type, event.subject, event.data) == (SUBJECT_FORGOTTEN, id, {"subject": id})


async def test_forget_of_unknown_subject_returns_false(backend: Backend) -> None:
    assert await shredder_of(backend).forget(new_id()) is False


async def test_verify_passes_and_stored_events_are_unchanged_after_forget(
    backend: Backend, style: Style
) -> None:
    repo, id = await open_account(backend, style)
    before = await raw(backend, repo.stream_id(id))
    await shredder_of(backend).forget(id)
    assert await raw(backend, repo.stream_id(id)) == before
    assert (await backend.store.verify()).ok


async def test_snapshot_is_sealed_and_unreadable_after_forget(
    backend: Backend, style: Style
) -> None:
    repo, id = await open_account(
        backend, style, snapshots=backend.snapshots, policy=EveryNEvents(1)
    )
    sealed = await backend.snapshots.latest(repo.stream_id(id))
    assert NAME.encode() not in sealed.state
    await shredder_of(backend).forget(id)
    state = style.state(await repo.load(id))
    assert (state.owner, state.balance) == (Erased(id), 40)
    rebuilt = await backend.snapshots.latest(repo.stream_id(id))
    assert (rebuilt.version, rebuilt.state != sealed.state) == (2, True)


async def test_commands_after_forget_keep_old_personal_data_erased(
    backend: Backend, style: Style
) -> None:
    repo, id = await open_account(backend, style)
    await shredder_of(backend).forget(id)
    await style.run(repo, id, Deposit(2))
    assert style.state(await repo.load(id)) == State(True, Erased(id), Erased(id), 42)
    assert await backend.keys.get(id) is None  # deposits carry no personal data: no new key


async def test_missing_optional_personal_value_stays_none(backend: Backend, style: Style) -> None:
    repo, id = style.repository(backend, shredder=shredder_of(backend)), new_id()
    await style.run(repo, id, Open(NAME))
    [record] = await backend.store.read_stream(repo.stream_id(id))
    assert record.event.data["iban"] is None


async def test_sqlite_forget_leaves_no_key_bytes_in_the_file(backend: Backend) -> None:
    if backend.name != "sqlite":
        pytest.skip("checks the SQLite file")
    id = new_id()
    key = await backend.keys.get_or_create(id)
    await backend.keys.forget(id)
    await backend.aclose()
    assert not _file_holds(Path(backend.where), key)


def _file_holds(path: Path, secret: bytes) -> bool:
    with sqlite3.connect(path) as conn:  # the last connection merges the WAL into the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return secret in path.read_bytes()


# -- the shredder alone -----------------------------------------------------------------------

crm = EventTypes()


@crm.register("crm.note.taken")
@dataclass(frozen=True)
class NoteTaken:
    customer_id: Annotated[str, SubjectId]
    text: Annotated[str | Erased, Personal]


@crm.register("crm.noise")
@dataclass(frozen=True)
class Noise:
    text: str


@dataclass(frozen=True)
class Careless:
    name: Annotated[str, Personal]


async def test_subject_id_field_names_whose_key_encrypts() -> None:
    shredder = Shredder(MemoryKeyStore(), crm)
    note = crm.to_event(NoteTaken("c-7", "likes tea"), source="/crm", subject="order-1")
    sealed = await shredder.protect(note)
    assert sealed.data["text"]["kid"] == "c-7"
    await shredder.forget("c-7")
    assert await shredder.decode(sealed) == NoteTaken("c-7", Erased("c-7"))


async def test_ciphertext_moved_to_another_event_does_not_decrypt() -> None:
    shredder = Shredder(MemoryKeyStore(), crm)
    first = await shredder.protect(crm.to_event(NoteTaken("c-1", "a"), source="/crm"))
    second = await shredder.protect(crm.to_event(NoteTaken("c-1", "b"), source="/crm"))
    forged = second.replace(data={**second.data, "text": first.data["text"]})
    with pytest.raises(CodecError, match="does not decrypt"):
        await shredder.reveal(forged)


async def test_event_without_personal_data_passes_through_unchanged() -> None:
    shredder = Shredder(MemoryKeyStore(), crm)
    event = crm.to_event(Noise("hello"), source="/crm")
    assert (await shredder.protect(event), await shredder.reveal(event)) == (event, event)


async def test_personal_data_without_a_subject_raises_codec_error() -> None:
    shredder = Shredder(MemoryKeyStore(), types)
    event = types.to_event(AccountOpened(NAME), source="/bank")  # no subject attribute
    with pytest.raises(CodecError, match="no subject"):
        await shredder.protect(event)


def test_personal_field_that_cannot_read_as_erased_raises_codec_error() -> None:
    with pytest.raises(CodecError, match=r"Annotated\[str \| Erased, Personal\]"):
        personal_fields(Careless)


def test_renamed_struct_field_is_found_under_its_encoded_name() -> None:
    class Renamed(msgspec.Struct, rename="camel"):
        full_name: Annotated[str | Erased, Personal]

    assert personal_fields(Renamed).fields == ("fullName",)


async def test_seal_needs_every_subject_key() -> None:
    keys = MemoryKeyStore()
    shredder = Shredder(keys, types)
    for subject in ("a", "b"):
        await keys.get_or_create(subject)
    sealed = await shredder.seal(b"state", {"a", "b"}, b"aad")
    assert sealed is not None
    assert await shredder.unseal(sealed, b"aad") == (b"state", {"a", "b"})
    await keys.forget("b")
    assert await shredder.unseal(sealed, b"aad") is None


async def test_seal_refuses_a_state_of_a_forgotten_subject() -> None:
    keys = MemoryKeyStore()
    await keys.get_or_create("a")
    assert await Shredder(keys, types).seal(b"state", {"a", "gone"}, b"aad") is None


async def test_state_loaded_before_forget_is_not_snapshotted_after_it(
    backend: Backend, style: Style
) -> None:
    options = {"snapshots": backend.snapshots, "policy": EveryNEvents(1)}
    repo, id = await open_account(backend, style, **options)
    loaded = await repo.load(id)  # plaintext in memory
    await shredder_of(backend).forget(id)
    style.record(loaded, Deposit(1))
    await repo.save(loaded)
    latest = await backend.snapshots.latest(repo.stream_id(id))
    assert latest.version == 2  # the one sealed before the forget; none at version 3
    assert style.state(await repo.load(id)).owner == Erased(id)


async def test_unseal_of_something_else_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="not a sealed snapshot"):
        await Shredder(MemoryKeyStore(), types).unseal(b"{}", b"aad")


def test_erased_decodes_from_its_json_form() -> None:
    assert msgspec.convert({"$erased": "c-1"}, str | Erased) == Erased("c-1")
