"""Outbox backends for the tests: an SQLite file per test, or a PostgreSQL schema per test.

`OutboxDb` writes events in a transaction of the application's own connection (committed or
rolled back) and opens sources on the same outbox, so one test body runs on both backends.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

import pytest

from tidings.events import Event
from tidings.outbox.ports import OutboxSource

POSTGRES_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"


def order_event(order_id: str, n: int = 0) -> Event:
    """An event of order ``order_id`` (its n-th)."""
    return Event(type="order.placed", source="/shop", subject=order_id, data={"n": n})


class OutboxDb:
    """One outbox, on SQLite or PostgreSQL."""

    name: str
    url: str

    async def write(self, events: Sequence[Event], *, commit: bool = True) -> None:
        """Add events (topic ``orders``) in one transaction, then commit or roll back."""
        raise NotImplementedError

    def source(self, **options: Any) -> OutboxSource:
        """Return an unopened source on this outbox."""
        from tidings.outbox.sources import open_source

        return open_source(self.url, **self.options, **options)

    options: dict[str, Any]

    async def execute(self, statement: str) -> None:
        """Run one SQL statement on the outbox's database; ``{table}`` names the outbox table."""
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Drop what the test made."""


class SQLiteDb(OutboxDb):
    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        from tidings.adapters.sqlite.outbox import SQLiteOutbox

        self.path = directory / "app.db"
        self.url = f"sqlite:///{self.path}"
        self.options = {}
        self.writer = SQLiteOutbox()
        conn = sqlite3.connect(self.path, isolation_level=None)
        self.writer.create_table(conn)
        conn.close()

    async def write(self, events: Sequence[Event], *, commit: bool = True) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("BEGIN")
            for event in events:
                self.writer.add(conn, event, topic="orders")
            conn.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            conn.close()

    async def execute(self, statement: str) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(statement.replace("{table}", "tidings_outbox"))
        finally:
            conn.close()


class PostgresDb(OutboxDb):
    name = "postgres"

    def __init__(self) -> None:
        from tidings.adapters.postgres.outbox import PostgresOutbox

        self.schema = f"outbox_{uuid.uuid4().hex[:10]}"
        self.url = POSTGRES_URL
        self.options = {"schema": self.schema}
        self.writer = PostgresOutbox(schema=self.schema)

    async def setup(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await self.writer.create_table(conn)

    async def write(self, events: Sequence[Event], *, commit: bool = True) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            for event in events:
                await self.writer.add(conn, event, topic="orders")
            await (conn.commit() if commit else conn.rollback())

    async def execute(self, statement: str) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(statement.replace("{table}", f'"{self.schema}".tidings_outbox'))  # type: ignore[arg-type]

    async def cleanup(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def outbox_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OutboxDb]:
    """An empty outbox on each backend."""
    if request.param == "sqlite":
        db: OutboxDb = SQLiteDb(tmp_path)
    else:
        db = PostgresDb()
        await db.setup()  # type: ignore[attr-defined]
    try:
        yield db
    finally:
        await db.cleanup()


@pytest.fixture
async def postgres_db() -> AsyncIterator[PostgresDb]:
    """An empty outbox in a fresh PostgreSQL schema."""
    db = PostgresDb()
    await db.setup()
    try:
        yield db
    finally:
        await db.cleanup()
