"""``tidings demo``: the main job, end to end on embedded SQLite, in seconds.

An order's life as typed events: placed, paid, shipped. They are turned into CloudEvents,
appended to an event store in a temporary SQLite file, read back from the global log, decoded
into their Python classes, and the hash chain is verified.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.codecs import EventTypes
from tidings.events import Event
from tidings.eventstore import NO_STREAM, RecordedEvent

__all__ = ["register", "run_demo"]

types = EventTypes()


@types.register("shop.order.placed")
@dataclass(frozen=True)
class OrderPlaced:
    """A customer placed an order."""

    order_id: str
    customer: str
    items: list[str]
    total_cents: int


@types.register("shop.payment.received")
@dataclass(frozen=True)
class PaymentReceived:
    """The order was paid."""

    order_id: str
    amount_cents: int
    method: str


@types.register("shop.order.shipped")
@dataclass(frozen=True)
class OrderShipped:
    """The order left the warehouse."""

    order_id: str
    carrier: str
    tracking: str


def register(app: typer.Typer) -> None:
    """Add the demo command to the app."""
    app.command("demo")(demo)


def demo(
    keep: Path | None = typer.Option(None, help="Write the database here instead of a temp dir."),
) -> None:
    """Run the end-to-end demo on embedded SQLite (no server needed)."""
    console = Console()
    if keep is not None:
        asyncio.run(run_demo(keep, console))
        return
    with tempfile.TemporaryDirectory(prefix="tidings-demo-") as folder:
        asyncio.run(run_demo(Path(folder) / "demo.db", console))


async def run_demo(path: Path, console: Console) -> list[RecordedEvent]:
    """Append two orders' events, read them back, verify the chain; return what was read."""
    console.print(Panel.fit(f"tidings demo: an order's life as events\nstore: sqlite:///{path}"))
    async with SQLiteEventStore(path) as store:
        for order_id, customer in (("o-1001", "ada"), ("o-1002", "grace")):
            await store.append(
                f"order-{order_id}", _order_events(order_id, customer), expected_version=NO_STREAM
            )
        records = await store.read_all()
        console.print(_log_table(records))
        first = records[0].event
        console.print(Panel(first.to_json().decode(), title="one event as CloudEvents JSON"))
        report = await store.verify()
    verdict = "[green]verified[/]" if report.ok else f"[red]BROKEN[/]: {report.problem}"
    console.print(f"hash chain over {report.records} records: {verdict}")
    if not report.ok:
        raise typer.Exit(code=1)
    return records


def _order_events(order_id: str, customer: str) -> list[Event]:
    source = "/demo/shop"
    placed = types.to_event(
        OrderPlaced(order_id, customer, ["tea", "cups"], 2350),
        source=source,
        subject=order_id,
        partitionkey=order_id,
    )
    paid = types.to_event(
        PaymentReceived(order_id, 2350, "card"), source=source, subject=order_id, caused_by=placed
    )
    shipped = types.to_event(
        OrderShipped(order_id, "ups", f"1Z{order_id[-4:]}"),
        source=source,
        subject=order_id,
        caused_by=paid,
    )
    return [placed, paid, shipped]


def _log_table(records: list[RecordedEvent]) -> Table:
    table = Table(title="the global log, read back and decoded")
    for column in ("pos", "stream", "ver", "type", "payload (decoded)", "caused by"):
        table.add_column(column, overflow="fold")
    for record in records:
        payload = types.from_event(record.event)
        cause = (record.event.causationid or "")[-8:]
        table.add_row(
            str(record.position),
            record.stream_id,
            str(record.version),
            record.event.type,
            repr(payload),
            cause,
        )
    return table
