"""The backends the conformance suites run against, as one parametrized ``harness`` fixture.

``memory`` always runs; ``sqlite`` runs on a fresh file under ``tmp_path``; ``postgres`` (marked
``postgres``) runs in a fresh schema per store on the service at `POSTGRES_URL`, dropped after
the test. Damage is done with the drivers directly, on the ``tidings_events`` table both SQL
backends share.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

import pytest

pytest.register_assert_rewrite("tidings.testing")

from tidings.eventstore.ports import EventStore  # noqa: E402
from tidings.eventstore.records import StoredRecord, decode_event  # noqa: E402
from tidings.testing.conformance.eventstore import (  # noqa: E402
    Capabilities,
    EventStoreHarness,
    MemoryHarness,
)

POSTGRES_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"

_SQL_CAPABILITIES: Final = Capabilities(
    durable=True, cross_process=True, tamper=True, insert=True, recorded_heads=True
)
_COLUMNS: Final = (
    "position, stream_id, version, event_id, type, recorded_at_us, flags, envelope,"
    " content_hash, stream_hash, log_hash"
)
_INSERT: Final = f"INSERT INTO {{table}} ({_COLUMNS}) VALUES ({', '.join(['%s'] * 11)})"


def _row(record: StoredRecord) -> tuple[object, ...]:
    event = decode_event(record.envelope or b"", record.flags)
    return (
        record.position,
        record.stream_id,
        record.version,
        event.id,
        event.type,
        record.recorded_at_us,
        record.flags,
        record.envelope,
        record.content_hash,
        record.stream_hash,
        record.log_hash,
    )


class SQLiteHarness(EventStoreHarness):
    """`SQLiteEventStore` on a new file per store; damage through ``sqlite3``."""

    capabilities = _SQL_CAPABILITIES

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._paths: dict[EventStore, tuple[Path, int | None]] = {}

    async def make_store(self, *, max_event_bytes: int | None = None) -> EventStore:
        return await self._open(self._directory / f"{uuid.uuid4().hex}.db", max_event_bytes)

    async def _open(self, path: Path, max_event_bytes: int | None) -> EventStore:
        from tidings.adapters.sqlite.eventstore import SQLiteEventStore

        store = SQLiteEventStore(str(path), max_event_bytes=max_event_bytes)
        self._paths[store] = (path, max_event_bytes)
        return await store.open()

    async def open_again(self, store: EventStore) -> EventStore:
        return await self._open(*self._paths[store])

    async def aclose(self) -> None:
        for store in self._paths:
            await store.aclose()

    async def tamper_envelope(self, store: EventStore, position: int, envelope: bytes) -> None:
        sql = "UPDATE tidings_events SET envelope = ? WHERE position = ?"
        await self._execute(store, sql, (envelope, position))

    async def delete_record(self, store: EventStore, position: int) -> None:
        await self._execute(store, "DELETE FROM tidings_events WHERE position = ?", (position,))

    async def insert_record(self, store: EventStore, record: StoredRecord) -> None:
        sql = _INSERT.format(table="tidings_events").replace("%s", "?")
        await self._execute(store, sql, _row(record))

    async def _execute(self, store: EventStore, sql: str, params: tuple[object, ...]) -> None:
        path = self._paths[store][0]
        await asyncio.to_thread(_sqlite_execute, path, sql, params)


def _sqlite_execute(path: Path, sql: str, params: tuple[object, ...]) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as connection, connection:
        changed = connection.execute(sql, params).rowcount
    assert changed == 1, f"{sql!r} changed {changed} rows"


class PostgresHarness(EventStoreHarness):
    """`PostgresEventStore` in a new schema per store; damage through ``psycopg``."""

    capabilities = _SQL_CAPABILITIES

    def __init__(self, url: str) -> None:
        self._url = url
        self._schemas: dict[EventStore, tuple[str, int | None]] = {}

    async def make_store(self, *, max_event_bytes: int | None = None) -> EventStore:
        return await self._open(f"t_{uuid.uuid4().hex}", max_event_bytes)

    async def _open(self, schema: str, max_event_bytes: int | None) -> EventStore:
        from tidings.adapters.postgres.eventstore import PostgresEventStore

        store = PostgresEventStore(self._url, schema=schema, max_event_bytes=max_event_bytes)
        self._schemas[store] = (schema, max_event_bytes)
        return await store.open()

    async def open_again(self, store: EventStore) -> EventStore:
        return await self._open(*self._schemas[store])

    async def aclose(self) -> None:
        for store in self._schemas:
            await store.aclose()
        for schema in {schema for schema, _ in self._schemas.values()}:
            await self._run("DROP SCHEMA IF EXISTS {schema} CASCADE", schema, ())

    async def tamper_envelope(self, store: EventStore, position: int, envelope: bytes) -> None:
        sql = "UPDATE {schema}.tidings_events SET envelope = %s WHERE position = %s"
        await self._change(store, sql, (envelope, position))

    async def delete_record(self, store: EventStore, position: int) -> None:
        sql = "DELETE FROM {schema}.tidings_events WHERE position = %s"
        await self._change(store, sql, (position,))

    async def insert_record(self, store: EventStore, record: StoredRecord) -> None:
        await self._change(store, _INSERT.format(table="{schema}.tidings_events"), _row(record))

    async def _change(self, store: EventStore, sql: str, params: tuple[object, ...]) -> None:
        changed = await self._run(sql, self._schemas[store][0], params)
        assert changed == 1, f"{sql!r} changed {changed} rows"

    async def _run(self, sql: str, schema: str, params: tuple[object, ...]) -> int:
        import psycopg
        from psycopg import sql as pgsql

        query = pgsql.SQL(sql).format(schema=pgsql.Identifier(schema))  # type: ignore[arg-type]
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            cursor = await conn.execute(query, params)
            return cursor.rowcount


def _sqlite_harness(tmp_path: Path) -> EventStoreHarness:
    pytest.importorskip("tidings.adapters.sqlite.eventstore", exc_type=ModuleNotFoundError)
    return SQLiteHarness(tmp_path)


def _postgres_harness(tmp_path: Path) -> EventStoreHarness:
    pytest.importorskip("tidings.adapters.postgres.eventstore", exc_type=ModuleNotFoundError)
    return PostgresHarness(POSTGRES_URL)


_HARNESSES: Final[dict[str, Callable[[Path], EventStoreHarness]]] = {
    "memory": lambda _: MemoryHarness(),
    "sqlite": _sqlite_harness,
    "postgres": _postgres_harness,
}


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[EventStoreHarness]:
    """One backend's harness; every store it made is closed and removed afterwards."""
    made = _HARNESSES[request.param](tmp_path)
    yield made
    await made.aclose()
