"""The SQLAlchemy writer: rows commit and roll back with the session, read by the relays."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from tests.outbox.conftest import OutboxDb, order_event

from tidings.lifecycle import Resource
from tidings.outbox.sqlalchemy import SQLAlchemyOutbox


def engine_url(db: OutboxDb) -> str:
    if db.name == "sqlite":
        return f"sqlite:///{db.path}"  # type: ignore[attr-defined]
    return db.url.replace("postgresql://", "postgresql+psycopg://")


async def test_session_commit_and_rollback_decide_what_is_relayed(outbox_db: OutboxDb) -> None:
    schema = outbox_db.options.get("schema", "public")
    outbox = SQLAlchemyOutbox(schema=schema)
    engine = create_engine(engine_url(outbox_db))
    kept, dropped = order_event("kept"), order_event("dropped")
    try:
        with Session(engine) as session, session.begin():
            session.execute(text("SELECT 1"))
            outbox.add(session, kept, topic="orders")
        with Session(engine) as session, session.begin():
            outbox.add(session, dropped, topic="orders")
            session.rollback()
    finally:
        engine.dispose()
    source = outbox_db.source()
    assert isinstance(source, Resource)
    async with source:
        batch = await source.fetch(10)
    assert [m.event.id for m in batch] == [kept.id]
    assert batch[0].event.partitionkey == "kept"


def test_other_dialects_are_refused() -> None:
    from tidings.errors import ConfigurationError

    engine = create_engine("sqlite://")
    engine.dialect.name = "mysql"
    with engine.connect() as conn, pytest.raises(ConfigurationError, match="SQLite and Post"):
        SQLAlchemyOutbox().add(conn, order_event("a"), topic="orders")
