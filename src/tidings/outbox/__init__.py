"""The transactional outbox: events written with the business change, relayed to a broker.

Writers (in the application's transaction): `tidings.adapters.sqlite.outbox.SQLiteOutbox`
(sqlite3), `tidings.adapters.postgres.outbox.PostgresOutbox` (psycopg) and
`tidings.outbox.sqlalchemy.SQLAlchemyOutbox` (a SQLAlchemy session). A `Relay` publishes what
an `OutboxSource` holds to any broker; `open_source` picks the source for a URL.
"""

from tidings.outbox.ports import OutboxMessage, OutboxSource, OutboxStatus
from tidings.outbox.relay import Relay
from tidings.outbox.sources import open_source

__all__ = ["OutboxMessage", "OutboxSource", "OutboxStatus", "Relay", "open_source"]
