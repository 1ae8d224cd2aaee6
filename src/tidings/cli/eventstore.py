"""Event store commands: ``streams``, ``events``, ``tail`` and ``verify``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import typer
from rich.console import Console
from rich.table import Table

from tidings.events import format_time
from tidings.eventstore import RecordedEvent, open_event_store
from tidings.urls import configured_url

__all__ = ["register"]

_URL_HELP = "Event store URL (default: $TIDINGS_EVENTSTORE_URL, $TIDINGS_URL, sqlite:///tidings.db)"


def register(app: typer.Typer) -> None:
    """Add the event store commands to the app."""
    app.command("streams")(streams)
    app.command("events")(events)
    app.command("tail")(tail)
    app.command("verify")(verify)


def _url(url: str | None) -> str:
    return url or configured_url("eventstore")


def streams(
    url: str | None = typer.Option(None, "--url", "-u", help=_URL_HELP),
    after: str | None = typer.Option(None, help="List streams after this id."),
    limit: int = typer.Option(100, min=1, help="How many streams."),
) -> None:
    """List streams with their versions."""

    async def run() -> None:
        async with open_event_store(_url(url)) as store:
            infos = await store.streams(after=after, limit=limit)
        table = Table("stream", "version", "max count", "max age", "deleted")
        for info in infos:
            meta = info.metadata
            table.add_row(
                info.stream_id,
                str(info.version),
                "" if meta.max_count is None else str(meta.max_count),
                "" if meta.max_age is None else str(meta.max_age),
                "yes" if meta.deleted else "",
            )
        Console().print(table)

    asyncio.run(run())


def events(
    stream_id: str = typer.Argument(..., help="The stream to read."),
    url: str | None = typer.Option(None, "--url", "-u", help=_URL_HELP),
    limit: int | None = typer.Option(None, min=1, help="How many events."),
    backwards: bool = typer.Option(False, help="Newest first."),
) -> None:
    """Print one stream's events."""

    async def run() -> None:
        async with open_event_store(_url(url)) as store:
            records = await store.read_stream(stream_id, limit=limit, backwards=backwards)
        Console().print(_records_table(records, title=f"stream {stream_id}"))

    asyncio.run(run())


def tail(
    url: str | None = typer.Option(None, "--url", "-u", help=_URL_HELP),
    after: int | None = typer.Option(None, help="Start after this position (default: the head)."),
    count: int | None = typer.Option(None, min=1, help="Stop after this many events."),
) -> None:
    """Follow the global log live, one line per event (Ctrl-C to stop)."""
    console = Console()

    async def run() -> None:
        async with open_event_store(_url(url)) as store:
            start = await store.head_position() if after is None else after
            seen = 0
            async for record in store.subscribe(after_position=start):
                console.print(_line(record), highlight=False, soft_wrap=True)
                seen += 1
                if count is not None and seen >= count:
                    return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def verify(
    url: str | None = typer.Argument(None, help=_URL_HELP),
) -> None:
    """Walk the hash chains of every stream and of the log; exit 1 at the first bad record."""

    async def run() -> bool:
        async with open_event_store(_url(url)) as store:
            report = await store.verify()
        console = Console()
        if report.ok:
            console.print(
                f"[green]ok[/]: {report.records} records in {report.streams} streams verified"
            )
        else:
            console.print(f"[red]FAILED[/] after {report.records} good records: {report.problem}")
        return report.ok

    if not asyncio.run(run()):
        raise typer.Exit(code=1)


def _line(record: RecordedEvent) -> str:
    event = record.event
    return (
        f"{record.position:>8}  {format_time(record.recorded_at)}  "
        f"{record.stream_id}@{record.version}  {event.type}  {event.data!r}"
    )


def _records_table(records: Sequence[RecordedEvent], *, title: str) -> Table:
    table = Table(title=title)
    for column in ("ver", "pos", "recorded", "type", "id", "data"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            str(r.version),
            str(r.position),
            format_time(r.recorded_at),
            r.event.type,
            r.event.id,
            repr(r.event.data),
        )
    return table
