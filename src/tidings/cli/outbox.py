"""The outbox commands: ``tidings outbox relay URL BROKER_URL``, ``tidings outbox status URL``
(and ``tidings outbox slot ...``, in `tidings.cli.outbox_slot`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

import typer

from tidings.cli.outbox_slot import slot_commands
from tidings.errors import TidingsError
from tidings.outbox.ports import OutboxSource, OutboxStatus

__all__ = ["register"]

outbox = typer.Typer(help="The transactional outbox: run a relay, show the backlog.")
outbox.add_typer(slot_commands, name="slot")  # the tableless outbox's replication slot

_URL = typer.Argument(..., help="The outbox's database: sqlite:///app.db, postgresql://...")
_SOURCE = typer.Option(
    None, "--source", help="What to read: 'table' (default) or another registered kind."
)
_SCHEMA = typer.Option(None, help="PostgreSQL schema of the outbox (default public).")
_TABLE = typer.Option(None, help="Name of the outbox table (default tidings_outbox).")


def register(app: typer.Typer) -> None:
    """Add the ``outbox`` command group to the app."""
    app.add_typer(outbox, name="outbox")


def _source(url: str, kind: str | None, **options: object) -> OutboxSource:
    from tidings.outbox.sources import open_source

    given = {name: value for name, value in options.items() if value is not None}
    return open_source(url, kind, **given)


def _managed(resource: object) -> AbstractAsyncContextManager[object]:
    # Sources and brokers are resources (async context managers); their ports do not say so.
    if not isinstance(resource, AbstractAsyncContextManager):
        raise TypeError(f"{type(resource).__name__} is not an async context manager")
    return resource


@outbox.command("relay")
def relay(
    url: str = _URL,
    broker_url: str = typer.Argument(..., help="Where to publish: sqlite:///..., nats://..."),
    source: str | None = _SOURCE,
    schema: str | None = _SCHEMA,
    table: str | None = _TABLE,
    retention: float | None = typer.Option(
        None, min=0.0, help="Seconds to keep relayed rows (default 0: delete them at once)."
    ),
    batch_size: int = typer.Option(500, min=1, help="Most messages per publish."),
    drain: bool = typer.Option(False, "--drain", help="Relay the backlog, then exit."),
    log_level: str = typer.Option("WARNING", help="Logging level of tidings' messages."),
) -> None:
    """Publish committed outbox messages to a broker until SIGTERM or SIGINT (or --drain).

    Prints ``ready`` once connected. Several relays may run at once: each aggregate is relayed
    by one of them at a time, in commit order; a relay killed mid-batch leaves it to the others
    (the broker drops the events it had already published, by event id).
    """
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    options = {"schema": schema, "table": table, "retention": retention}
    try:
        relayed, left = asyncio.run(_relay(url, broker_url, source, options, batch_size, drain))
    except TidingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"relayed {relayed} message(s)")
    if left:
        # A standby relay (another one holds the outbox) drains nothing: say so, do not succeed.
        typer.echo(f"{left} message(s) left: another relay holds them", err=True)
        raise typer.Exit(code=1)


async def _relay(
    url: str,
    broker_url: str,
    kind: str | None,
    options: Mapping[str, object],
    batch_size: int,
    drain: bool,
) -> tuple[int, int]:
    """Return how many messages were relayed and, after ``--drain``, how many are left."""
    from tidings.messaging import open_broker
    from tidings.outbox.relay import Relay

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    source = _source(url, kind, **options)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(_managed(source))
        broker = open_broker(broker_url)
        await stack.enter_async_context(_managed(broker))
        worker = Relay(source, broker, batch_size=batch_size)
        typer.echo("ready")
        if drain:
            relayed = await worker.drain()
            return relayed, (await source.status()).backlog
        await worker.run(stop)
        return worker.relayed, 0
    return 0, 0  # pragma: no cover - the stack re-raises


@outbox.command("status")
def status(
    url: str = _URL,
    source: str | None = _SOURCE,
    schema: str | None = _SCHEMA,
    table: str | None = _TABLE,
) -> None:
    """Show the backlog (committed, not yet relayed), its age, and relayed rows still kept."""

    from tidings.outbox.sources import split_kind

    # Looking must not create: a WAL slot that nobody reads would keep WAL forever.
    read_only = {"create": False} if split_kind(url, source)[1] == "wal" else {}

    async def run() -> OutboxStatus:
        opened = _source(url, source, schema=schema, table=table, **read_only)
        async with _managed(opened):
            return await opened.status()

    try:
        found = asyncio.run(run())
    except TidingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"backlog: {found.backlog}")
    if found.oldest is not None:
        age = (datetime.now(UTC) - found.oldest).total_seconds()
        typer.echo(f"oldest: {found.oldest.isoformat()} ({age:.1f} s ago)")
    typer.echo(f"relayed, kept: {found.relayed}")
