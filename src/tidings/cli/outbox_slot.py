"""``tidings outbox slot create|drop|status URL``: the tableless outbox's replication slot.

The tableless outbox on PostgreSQL (docs/outbox_wal.md) is read through a logical replication
slot. Create it before the writers start (messages committed while no slot exists are never
read), watch what WAL it keeps, and drop it when no relay will read it again (a slot nobody
reads keeps WAL for ever). The URL may carry ``?slot=NAME`` and ``?source=wal``, as for
``tidings outbox relay``; ``--slot`` wins over the URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from tidings.errors import ConfigurationError, TidingsError

if TYPE_CHECKING:
    from tidings.adapters.postgres.outbox_wal import PostgresWalOutboxSource

__all__ = ["slot_commands"]

T = TypeVar("T")

slot_commands = typer.Typer(
    help="The tableless (WAL) outbox's replication slot on PostgreSQL: create, drop, status."
)

_URL = typer.Argument(..., help="The writers' database: postgresql://... (?slot=NAME accepted).")
_SLOT = typer.Option(
    None, "--slot", help="The slot (default: the URL's ?slot=, else tidings_outbox)."
)


def _run(
    url: str, slot: str | None, action: Callable[[PostgresWalOutboxSource], Awaitable[T]]
) -> T:
    """Run ``action`` on an admin source for the slot; a tidings error exits with code 1."""
    from tidings.adapters.postgres.outbox_wal import PostgresWalOutboxSource
    from tidings.outbox.sources import split_kind

    async def run() -> T:
        # channel=None: no listener; create=False: opening only checks wal_level.
        source = PostgresWalOutboxSource(split_kind(url)[0], slot=slot, channel=None, create=False)
        async with source:
            return await action(source)

    try:
        return asyncio.run(run())
    except TidingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc


@slot_commands.command("create")
def create(url: str = _URL, slot: str | None = _SLOT) -> None:
    """Create the slot and its publication; say so when they exist already."""

    async def action(source: PostgresWalOutboxSource) -> tuple[str, bool]:
        return source.slot, await source.create()

    name, created = _run(url, slot, action)
    typer.echo(f"created slot {name}" if created else f"slot {name} exists")


@slot_commands.command("drop")
def drop(
    url: str = _URL,
    slot: str | None = _SLOT,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Drop the slot and its publication: its WAL is freed, unrelayed messages are lost.

    Refuses while a relay holds the slot (stop it first).
    """
    if not yes:
        typer.confirm("Unrelayed messages of the slot will be lost. Drop it?", abort=True)

    async def action(source: PostgresWalOutboxSource) -> tuple[str, bool]:
        if not await source.activate():  # held until the drop is done: no relay starts reading
            raise ConfigurationError(f"a relay is reading slot {source.slot!r}: stop it first")
        return source.slot, await source.drop()

    name, dropped = _run(url, slot, action)
    typer.echo(f"dropped slot {name}" if dropped else f"no slot {name}")


@slot_commands.command("status")
def status(url: str = _URL, slot: str | None = _SLOT) -> None:
    """Show whether a relay reads the slot, the WAL it keeps, and the outbox backlog."""

    async def action(source: PostgresWalOutboxSource) -> list[str]:
        found = await source.slot_status()
        backlog = (await source.status()).backlog
        return [
            f"slot: {found.slot}",
            f"relay: {'running' if await source.has_reader() else 'none'}",
            f"decoding now: {'yes' if found.active else 'no'}",
            f"retained: {found.retained_bytes} bytes",
            f"unconsumed: {found.unconsumed_bytes} bytes",
            f"wal_status: {found.wal_status}",
            f"backlog: {backlog}",
        ]

    for line in _run(url, slot, action):
        typer.echo(line)
