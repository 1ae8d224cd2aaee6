"""Backends for the domain tests: an event store, a snapshot store and a key store on one backend.

``memory`` always runs; ``sqlite`` shares one fresh file under ``tmp_path``; ``postgres``
(marked ``postgres``) shares one fresh schema on the service at `POSTGRES_URL`, dropped after
the test. The snapshot and key store conformance suites get harnesses of the same backends.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

pytest.register_assert_rewrite("tidings.testing")

from tidings.adapters.memory.eventstore import MemoryEventStore  # noqa: E402
from tidings.adapters.memory.keys import MemoryKeyStore  # noqa: E402
from tidings.adapters.memory.snapshots import MemorySnapshotStore  # noqa: E402
from tidings.testing.conformance.keys import MemoryKeyHarness  # noqa: E402
from tidings.testing.conformance.snapshots import MemorySnapshotHarness  # noqa: E402

POSTGRES_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS: Final = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@dataclass
class Backend:
    """One backend's three stores, opened; ``where`` is the file or schema they share."""

    name: str
    store: Any
    snapshots: Any
    keys: Any
    where: str = ""

    async def aclose(self) -> None:
        for resource in (self.keys, self.snapshots, self.store):
            await resource.aclose()


async def drop_schema(schema: str) -> None:
    """Drop a PostgreSQL test schema and everything in it."""
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


async def _memory(_: Path) -> Backend:
    return Backend("memory", MemoryEventStore(), MemorySnapshotStore(), MemoryKeyStore())


async def _sqlite(tmp_path: Path) -> Backend:
    from tidings.adapters.sqlite.eventstore import SQLiteEventStore
    from tidings.adapters.sqlite.keys import SQLiteKeyStore
    from tidings.adapters.sqlite.snapshots import SQLiteSnapshotStore

    path = tmp_path / f"{uuid.uuid4().hex}.db"
    return Backend(
        "sqlite",
        SQLiteEventStore(path),
        SQLiteSnapshotStore(path),
        SQLiteKeyStore(path),
        str(path),
    )


async def _postgres(_: Path) -> Backend:
    pytest.importorskip("tidings.adapters.postgres.eventstore", exc_type=ModuleNotFoundError)
    from tidings.adapters.postgres.eventstore import PostgresEventStore
    from tidings.adapters.postgres.keys import PostgresKeyStore
    from tidings.adapters.postgres.snapshots import PostgresSnapshotStore

    schema = f"t_{uuid.uuid4().hex}"
    return Backend(
        "postgres",
        PostgresEventStore(POSTGRES_URL, schema=schema),
        PostgresSnapshotStore(POSTGRES_URL, schema=schema),
        PostgresKeyStore(POSTGRES_URL, schema=schema),
        schema,
    )


_MAKERS: Final[dict[str, Callable[[Path], Awaitable[Backend]]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The three stores of one backend, opened; closed (and dropped) afterwards."""
    made = await _MAKERS[request.param](tmp_path)
    try:
        for resource in (made.store, made.snapshots, made.keys):
            await resource.open()
        yield made
    finally:
        await made.aclose()
        if made.name == "postgres":
            await drop_schema(made.where)


class _Harness:
    """Fresh stores of one kind per call, each at its own location (a file or a schema)."""

    durable = True

    def __init__(self, open_at: Callable[[str], Any], locate: Callable[[], str]) -> None:
        self._open_at = open_at
        self._locate = locate
        self._made: list[tuple[Any, str]] = []

    async def make(self) -> Any:
        return await self._open(self._locate())

    async def reopen(self, store: Any) -> Any:
        return await self._open(next(where for made, where in self._made if made is store))

    async def _open(self, where: str) -> Any:
        store = self._open_at(where)
        self._made.append((store, where))
        return await store.open()

    async def aclose(self) -> None:
        for store, _ in self._made:
            await store.aclose()


class _PostgresHarness(_Harness):
    async def aclose(self) -> None:
        await super().aclose()
        for schema in {where for _, where in self._made}:
            await drop_schema(schema)


def _harness(kind: str, backend_name: str, tmp_path: Path) -> Any:
    if backend_name == "memory":
        return MemorySnapshotHarness() if kind == "snapshots" else MemoryKeyHarness()
    if backend_name == "sqlite":
        from tidings.adapters.sqlite.keys import SQLiteKeyStore
        from tidings.adapters.sqlite.snapshots import SQLiteSnapshotStore

        cls = SQLiteSnapshotStore if kind == "snapshots" else SQLiteKeyStore
        return _Harness(cls, lambda: str(tmp_path / f"{uuid.uuid4().hex}.db"))
    from tidings.adapters.postgres.keys import PostgresKeyStore
    from tidings.adapters.postgres.snapshots import PostgresSnapshotStore

    pg = PostgresSnapshotStore if kind == "snapshots" else PostgresKeyStore
    return _PostgresHarness(
        lambda schema: pg(POSTGRES_URL, schema=schema), lambda: f"t_{uuid.uuid4().hex}"
    )


@pytest.fixture(params=BACKENDS)
async def snapshot_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Makes snapshot stores of one backend for the conformance suite."""
    made = _harness("snapshots", request.param, tmp_path)
    yield made
    await made.aclose()


@pytest.fixture(params=BACKENDS)
async def key_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Makes key stores of one backend for the conformance suite."""
    made = _harness("keys", request.param, tmp_path)
    yield made
    await made.aclose()
