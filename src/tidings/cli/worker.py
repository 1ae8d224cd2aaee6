"""The ``worker`` command: run a `tidings.App` until SIGTERM, then drain and exit."""

from __future__ import annotations

import asyncio
import logging

import typer

from tidings.errors import TidingsError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``worker`` command to the app."""
    app.command("worker")(worker)


def worker(
    spec: str = typer.Argument(..., metavar="APP", help="The app as module:attribute."),
    drain_timeout: float | None = typer.Option(
        None, min=0.0, help="Seconds running handlers get after SIGTERM (default: the app's)."
    ),
    log_level: str = typer.Option("WARNING", help="Logging level of tidings' messages."),
) -> None:
    """Run an app's handlers until SIGTERM or SIGINT, let running ones finish, then exit 0.

    Deliveries not finished by then stay unsettled: the broker hands them to another member
    of the group, or to the next run.
    """
    from tidings.messaging.worker import load_app, serve

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        loaded = load_app(spec)
        if drain_timeout is not None:
            loaded.drain_timeout = drain_timeout
        asyncio.run(serve(loaded, say=typer.echo))
    except TidingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
