"""The dead-letter workbench: ``tidings dlq list|show|requeue|purge TOPIC``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import typer
from rich.console import Console

from tidings.events import format_time
from tidings.messaging.dlq import DeadLetter, DeadLetterStore, dead_letters, default_actor
from tidings.messaging.router import connected
from tidings.urls import configured_url

__all__ = ["register"]

_URL_HELP = "Broker URL (default: $TIDINGS_BROKER_URL, $TIDINGS_URL, sqlite:///tidings.db)"
_TOPIC = typer.Argument(..., help="The topic whose dead letters to work on (not the .dlq).")
_IDS = typer.Argument(None, help="Event ids of the entries (or --all).")

dlq = typer.Typer(help="Dead letters: list, show, requeue and purge (each change is audited).")


def register(app: typer.Typer) -> None:
    """Add the ``dlq`` command group to the app."""
    app.add_typer(dlq, name="dlq")


@asynccontextmanager
async def _workbench(url: str | None) -> AsyncIterator[DeadLetterStore]:
    async with connected(url or configured_url("broker")) as broker:
        yield dead_letters(broker)


def _chosen(event_ids: list[str] | None, every: bool) -> list[str] | None:
    if every == bool(event_ids):
        raise typer.BadParameter("name event ids or pass --all (not both)")
    return None if every else list(event_ids or ())


@dlq.command("list")
def list_(
    topic: str = _TOPIC,
    url: str | None = typer.Option(None, "--url", "-u", help=_URL_HELP),
    limit: int = typer.Option(100, min=1, help="How many entries at most."),
) -> None:
    """List a topic's dead letters by place: partition/offset, id, type, time, attempts, reason."""

    async def run() -> Sequence[DeadLetter]:
        async with _workbench(url) as store:
            return await store.list(topic, limit=limit)

    entries = asyncio.run(run())
    for entry in entries:
        typer.echo(_line(entry))
    typer.echo(f"{len(entries)} dead letter(s) of {topic}")


@dlq.command("show")
def show(
    topic: str = _TOPIC,
    event_id: str = typer.Argument(..., help="The event id."),
    url: str | None = typer.Option(None, "--url", "-u", help=_URL_HELP),
) -> None:
    """Print one dead letter: why it failed, and the whole event."""

    async def run() -> DeadLetter | None:
        async with _workbench(url) as store:
            return await store.show(topic, event_id)

    entry = asyncio.run(run())
    if entry is None:
        typer.echo(f"no dead letter {event_id} for {topic}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"{entry.event.type} {entry.event.id} from {entry.topic}")
    typer.echo(f"failed {entry.attempts} time(s): {entry.reason}")
    Console().print_json(entry.event.to_json().decode())


@dlq.command("requeue")
def requeue(
    topic: str = _TOPIC,
    event_ids: list[str] | None = _IDS,
    every: bool = typer.Option(False, "--all", help="Every entry."),
    delay: float = typer.Option(0.0, min=0.0, help="Wait this many seconds, then republish."),
    url: str | None = typer.Option(None, "--url", "-u", help=_URL_HELP),
    actor: str | None = typer.Option(None, help="Who does it, for the audit (default user@host)."),
) -> None:
    """Republish dead letters to their topic (as copies with new ids) and remove them."""
    chosen = _chosen(event_ids, every)

    async def run() -> Sequence[DeadLetter]:
        async with _workbench(url) as store:
            who = actor or default_actor()
            return await store.requeue(topic, chosen, actor=who, delay=delay)

    _report("requeued", asyncio.run(run()), chosen)


@dlq.command("purge")
def purge(
    topic: str = _TOPIC,
    event_ids: list[str] | None = _IDS,
    every: bool = typer.Option(False, "--all", help="Every entry."),
    url: str | None = typer.Option(None, "--url", "-u", help=_URL_HELP),
    actor: str | None = typer.Option(None, help="Who does it, for the audit (default user@host)."),
) -> None:
    """Remove dead letters for good (each removal is recorded on tidings.dlq.audit)."""
    chosen = _chosen(event_ids, every)

    async def run() -> Sequence[DeadLetter]:
        async with _workbench(url) as store:
            return await store.purge(topic, chosen, actor=actor or default_actor())

    _report("purged", asyncio.run(run()), chosen)


def _report(done: str, entries: Sequence[DeadLetter], chosen: list[str] | None) -> None:
    for entry in entries:
        typer.echo(f"{done} {entry.event.id} ({entry.event.type})")
    typer.echo(f"{len(entries)} {done}")
    missing = sorted(set(chosen or ()) - {entry.event.id for entry in entries})
    if missing:
        typer.echo(f"not found: {', '.join(missing)}", err=True)
        raise typer.Exit(code=1)


def _line(entry: DeadLetter) -> str:
    event = entry.event
    when = "-" if event.time is None else format_time(event.time)
    return (
        f"{entry.partition}/{entry.offset}  {event.id}  {event.type}  {when}"
        f"  attempts={entry.attempts}  {entry.reason}"
    )
