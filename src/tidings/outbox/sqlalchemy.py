"""The outbox writer for SQLAlchemy: rows added through the application's session.

Most Python services write to their database through a SQLAlchemy ``Session``; the outbox row
belongs in the same transaction, so `SQLAlchemyOutbox.add` executes its INSERT on that
session (SQLite and PostgreSQL dialects; the rows are the ones the other writers store, read by
the same relays)::

    outbox = SQLAlchemyOutbox()
    with Session(engine) as session, session.begin():
        session.add(Order(id=order_id, total=total))
        outbox.add(session, Event(type="order.placed", source="/shop", data={...}),
                   topic="orders", aggregate_id=order_id)

With an ``AsyncSession``, run it on the session's sync side:
``await session.run_sync(outbox.add, event, topic="orders", aggregate_id=order_id)``.
Needs the ``sqlalchemy`` extra (``pip install 'tidings[sqlalchemy]'``).
"""

from __future__ import annotations

from typing import Final

from tidings.errors import ConfigurationError
from tidings.events import Event
from tidings.eventstore.base import DEFAULT_MAX_EVENT_BYTES
from tidings.outbox.rows import DEFAULT_TABLE, lock_key, outbox_row
from tidings.outbox.schema import PostgresSQL, SQLiteSQL

try:
    from sqlalchemy import Connection, TextClause, text
    from sqlalchemy.orm import Session
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigurationError(
        "the SQLAlchemy outbox needs sqlalchemy: pip install 'tidings[sqlalchemy]'",
        extra="sqlalchemy",
    ) from exc

__all__ = ["SQLAlchemyOutbox"]

_DIALECTS: Final = ("sqlite", "postgresql")


class SQLAlchemyOutbox:
    """Writes outbox rows through a SQLAlchemy ``Session`` or ``Connection``.

    Args:
        table: The outbox table's name.
        schema: The PostgreSQL schema of the table (ignored on SQLite).
        max_event_bytes: The largest encoded event accepted.
    """

    def __init__(
        self,
        *,
        table: str = DEFAULT_TABLE,
        schema: str = "public",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.max_event_bytes = max_event_bytes
        self._sqlite = SQLiteSQL(table)
        self._postgres = PostgresSQL(schema, table)
        self._inserts = {
            "sqlite": text(self._sqlite.insert()),
            "postgresql": text(self._postgres.insert()),
        }

    def create_table(self, bind: Session | Connection) -> None:
        """Create the table if missing, in the session's or connection's transaction."""
        dialect = _dialect(bind)
        statements = self._sqlite.ddl() if dialect == "sqlite" else self._postgres.ddl()
        for statement in statements:
            bind.execute(text(statement))

    def add(
        self,
        bind: Session | Connection,
        event: Event,
        *,
        topic: str,
        key: str | None = None,
        aggregate_type: str | None = None,
        aggregate_id: str | None = None,
    ) -> None:
        """Insert ``event`` for ``topic`` in the session's current transaction.

        It is published only if that transaction commits. Defaults of the key and the
        aggregate: `tidings.outbox.rows.outbox_row`.
        """
        row = outbox_row(
            event,
            topic=topic,
            key=key,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            max_event_bytes=self.max_event_bytes,
        )
        params = row.params()
        dialect = _dialect(bind)
        if dialect == "sqlite":
            params["occurred_at"] = row.occurred_at.isoformat()
        else:
            params["lock"] = lock_key(self._postgres.qualified, row.aggregate_id)
        statement: TextClause = self._inserts[dialect]
        bind.execute(statement, params)


def _dialect(bind: Session | Connection) -> str:
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    name = engine.dialect.name
    if name not in _DIALECTS:
        raise ConfigurationError(f"the outbox supports SQLite and PostgreSQL, not {name}")
    return name
