"""The ``tidings`` command line: one typer app, one module per command group."""

from __future__ import annotations

import typer

from tidings import __version__
from tidings.cli import demo, dlq, doctor, eventstore, ordering, projections, worker
from tidings.cli import outbox as outbox_cli
from tidings.cli import topics as topics_cli

__all__ = ["app", "main"]

app = typer.Typer(
    name="tidings",
    help="tidings: events, pub/sub, event sourcing and CQRS for Python.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tidings {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """tidings: events, pub/sub, event sourcing and CQRS for Python."""


demo.register(app)
dlq.register(app)
doctor.register(app)
eventstore.register(app)
ordering.register(app)
projections.register(app)
outbox_cli.register(app)
topics_cli.register(app)
worker.register(app)


def main() -> None:
    """Run the command line."""
    app()
