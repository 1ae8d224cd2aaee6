"""Backends of the idempotency tests: the ``dedup_harness`` of the conformance suites.

``memory`` always runs; ``sqlite`` makes a fresh file under ``tmp_path`` per store;
``postgres`` (marked ``postgres``) a fresh schema per store, dropped after the test; ``redis``
(marked ``redis``) a fresh key prefix per store, whose keys are deleted after the test.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest

pytest.register_assert_rewrite("tidings.testing")

from tidings.idempotency import DedupStore, Inbox, InboxTx  # noqa: E402
from tidings.testing.conformance.dedup import MemoryDedupHarness  # noqa: E402

POSTGRES_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL: Final = "redis://127.0.0.1:6379/0"


class SQLiteDedupHarness:
    """Stores and inboxes on a new SQLite file each."""

    durable = True
    purge_counts = True

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._made: list[tuple[Any, Path]] = []

    async def make(self) -> DedupStore:
        from tidings.adapters.sqlite.dedup import SQLiteDedupStore

        return await self._open(SQLiteDedupStore, self._directory / f"{uuid.uuid4().hex}.db")

    async def reopen(self, store: DedupStore) -> DedupStore:
        path = next(where for made, where in self._made if made is store)
        return await self._open(type(store), path)

    async def inbox(self) -> Inbox[Any]:
        from tidings.adapters.sqlite.dedup import SQLiteInbox

        path = self._directory / f"{uuid.uuid4().hex}.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE effects (name TEXT)")
        conn.close()
        inbox: Inbox[Any] = await self._open(SQLiteInbox, path)
        return inbox

    async def _open(self, cls: Any, path: Path) -> Any:
        store = cls(path)
        self._made.append((store, path))
        return await store.open()

    def write_effect(self, tx: InboxTx, name: str) -> None:
        tx.execute("INSERT INTO effects (name) VALUES (?)", (name,))  # type: ignore[attr-defined]

    async def effects(self, inbox: Inbox[Any]) -> list[str]:
        rows = await inbox.fetchall("SELECT name FROM effects ORDER BY rowid")  # type: ignore[attr-defined]
        return [row[0] for row in rows]

    async def aclose(self) -> None:
        for store, _ in self._made:
            await store.aclose()


class PostgresDedupHarness:
    """Stores and inboxes in a new schema each."""

    durable = True
    purge_counts = True

    def __init__(self) -> None:
        self._made: list[tuple[Any, str]] = []

    async def make(self) -> DedupStore:
        from tidings.adapters.postgres.dedup import PostgresDedupStore

        return await self._open(PostgresDedupStore, f"t_{uuid.uuid4().hex}")

    async def reopen(self, store: DedupStore) -> DedupStore:
        schema = next(where for made, where in self._made if made is store)
        return await self._open(type(store), schema)

    async def inbox(self) -> Inbox[Any]:
        from tidings.adapters.postgres.dedup import PostgresInbox

        inbox: Inbox[Any] = await self._open(PostgresInbox, f"t_{uuid.uuid4().hex}")
        await _pg(f'CREATE TABLE "{inbox.schema}".effects (id SERIAL, name TEXT)')  # type: ignore[attr-defined]
        return inbox

    async def _open(self, cls: Any, schema: str) -> Any:
        store = cls(POSTGRES_URL, schema=schema)
        self._made.append((store, schema))
        return await store.open()

    async def write_effect(self, tx: InboxTx, name: str) -> None:
        schema = tx.inbox.schema  # type: ignore[attr-defined]
        await tx.execute(f'INSERT INTO "{schema}".effects (name) VALUES (%s)', (name,))  # type: ignore[attr-defined]

    async def effects(self, inbox: Inbox[Any]) -> list[str]:
        rows = await _pg(f'SELECT name FROM "{inbox.schema}".effects ORDER BY id')  # type: ignore[attr-defined]
        return [row[0] for row in rows]

    async def aclose(self) -> None:
        for store, _ in self._made:
            await store.aclose()
        for schema in {where for _, where in self._made}:
            await _pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _pg(statement: str) -> list[tuple[Any, ...]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        cursor = await conn.execute(statement.encode())
        return await cursor.fetchall() if cursor.description else []


class RedisDedupHarness:
    """Stores under a new key prefix each."""

    durable = True
    purge_counts = False

    def __init__(self) -> None:
        self._made: list[tuple[Any, str]] = []

    async def make(self) -> DedupStore:
        return await self._open(f"test-{uuid.uuid4().hex}")

    async def reopen(self, store: DedupStore) -> DedupStore:
        return await self._open(store.prefix)  # type: ignore[attr-defined]

    async def _open(self, prefix: str) -> Any:
        from tidings.adapters.redis.dedup import RedisDedupStore

        store = RedisDedupStore(REDIS_URL, prefix=prefix)
        self._made.append((store, prefix))
        return await store.open()

    async def inbox(self) -> Inbox[Any]:
        pytest.skip("Redis has no inbox: its keys cannot join a SQL transaction")

    def write_effect(self, tx: InboxTx, name: str) -> None:
        raise NotImplementedError

    async def effects(self, inbox: Inbox[Any]) -> list[str]:
        raise NotImplementedError

    async def aclose(self) -> None:
        import redis.asyncio as aioredis

        for store, _ in self._made:
            await store.aclose()
        client = aioredis.Redis.from_url(REDIS_URL)
        for prefix in {where for _, where in self._made}:
            keys = [key async for key in client.scan_iter(f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
        await client.aclose()


BACKENDS: Final = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
async def dedup_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Makes dedup stores (and inboxes) of one backend; removes what they stored afterwards."""
    made: Any = {
        "memory": MemoryDedupHarness,
        "sqlite": lambda: SQLiteDedupHarness(tmp_path),
        "postgres": PostgresDedupHarness,
        "redis": RedisDedupHarness,
    }[request.param]()
    yield made
    await made.aclose()
