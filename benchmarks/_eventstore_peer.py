"""The eventsourcing library doing the event store benchmark's work (not a benchmark module).

eventsourcing stores an aggregate's events, so every write here is ``Application.save`` of
aggregates whose pending events were recorded beforehand (untimed): the timed part is what
tidings' ``append`` does too (encode, insert, commit). Its event carries the same payload and
the same metadata strings as tidings' typical event, so the stored state is about as large
(`STATE_BYTES` against `ENVELOPE_BYTES`).

Reads go through the notification log, the way its process applications follow the log:
``recorder.select_notifications`` in pages of `PAGE`, then ``mapper.to_domain_event`` of every
notification (the decoded domain event object).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks._envelope_fixtures import CAUSATION, CORRELATION, PAYLOAD, SOURCE, SUBJECT
from benchmarks.api import Skip

try:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event
except ImportError as exc:  # the module's other cases still run
    Application = None  # type: ignore[assignment,misc]
    _MISSING = str(exc)

__all__ = [
    "PAGE",
    "STATE_BYTES",
    "new_orders",
    "postgres_app",
    "read_notifications",
    "sqlite_app",
]

PAGE: Final = 1_000
"""Notifications per select_notifications call (tidings reads the log 1,000 rows a page too)."""

POSTGRES_ENV: Final = {
    "PERSISTENCE_MODULE": "eventsourcing.postgres",
    "POSTGRES_DBNAME": "test",
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_PORT": "5432",
    "POSTGRES_USER": "postgres",
    "POSTGRES_PASSWORD": "",
}

if Application is not None:

    class Order(Aggregate):  # type: ignore[misc,valid-type]
        """An order whose events carry the typical event's payload and metadata."""

        @event("Placed")
        def place(
            self,
            data: dict[str, object],
            source: str,
            subject: str,
            correlation_id: str,
            causation_id: str,
            tenant: str,
        ) -> None:
            """Record that the order was placed (the state is the event itself)."""


def _require() -> None:
    if Application is None:
        raise Skip(f"eventsourcing is not installed: {_MISSING}")


def new_orders(count: int, events_each: int) -> list[Any]:
    """Return ``count`` aggregates with ``events_each`` pending events (Created included)."""
    _require()
    orders = []
    for _ in range(count):
        order = Order()
        for _ in range(events_each - 1):
            order.place(PAYLOAD, SOURCE, SUBJECT, CORRELATION, CAUSATION, "acme")
        orders.append(order)
    return orders


def _state_bytes() -> int:
    if Application is None:
        return 0
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    order = new_orders(1, 2)[0]
    stored = app.mapper.to_stored_event(order.collect_events()[1])
    app.close()
    return len(stored.state)


STATE_BYTES: Final = _state_bytes()
"""Size of the stored state of one eventsourcing ``Placed`` event."""


def sqlite_app(path: Path) -> Any:
    """Return an Application on ``eventsourcing.sqlite``, after checking it commits durably."""
    _require()
    app = Application(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )
    # eventsourcing sets journal_mode=WAL and leaves synchronous at SQLite's default; the
    # comparison is only fair if that default is FULL, as tidings' is.
    with app.recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
    if synchronous != 2 or journal.lower() != "wal":
        app.close()
        raise RuntimeError(f"eventsourcing.sqlite runs synchronous={synchronous}, {journal}")
    return app


def postgres_app(schema: str, pool_size: int = 5) -> Any:
    """Return an Application on ``eventsourcing.postgres`` with its tables in ``schema``."""
    _require()
    env = {**POSTGRES_ENV, "POSTGRES_SCHEMA": schema, "POSTGRES_POOL_SIZE": str(pool_size)}
    return Application(env=env)


def read_notifications(app: Any, up_to: int) -> int:
    """Read notifications 1..up_to in pages and decode each into its domain event."""
    to_domain_event = app.mapper.to_domain_event
    start, count = 0, 0
    while start < up_to:
        page: Sequence[Any] = app.recorder.select_notifications(
            start, PAGE, stop=up_to, inclusive_of_start=False
        )
        if not page:
            break
        for notification in page:
            to_domain_event(notification)
        count += len(page)
        start = page[-1].id
    return count


def save_each(app: Any, orders: Sequence[Any]) -> None:
    """Save aggregates one ``save`` (one transaction) each."""
    for order in orders:
        app.save(order)


@contextlib.contextmanager
def closing(app: Any) -> Iterator[Any]:
    """Close the application (its connection pool) on leaving."""
    try:
        yield app
    finally:
        app.close()
