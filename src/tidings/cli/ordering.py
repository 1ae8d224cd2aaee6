"""The ``verify-ordering`` command: run the ordering torture test against a database."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from tidings.testing.ordering import OrderingReport

__all__ = ["register"]

_DEFAULT_SECONDS: Final = 10.0


def register(app: typer.Typer) -> None:
    """Add the ``verify-ordering`` command to the app."""
    app.command("verify-ordering")(verify_ordering)


def verify_ordering(
    url: str = typer.Argument(..., help="sqlite:///path.db or postgresql://user@host/db"),
    writers: int = typer.Option(4, min=1, help="Writer processes."),
    tasks: int = typer.Option(8, min=1, help="Concurrent appending tasks per writer."),
    seconds: float | None = typer.Option(
        None, min=0.5, help="How long the writers append (default: 10, or until --appends)."
    ),
    appends: int | None = typer.Option(None, min=1, help="Appends per task (default: no limit)."),
    subscribers: int = typer.Option(3, min=0, help="Live subscriptions to compare."),
    kill: bool = typer.Option(True, "--kill/--no-kill", help="SIGKILL one writer mid-run."),
    keep: bool = typer.Option(False, help="Keep the test's file or schema and its journals."),
    seed: int | None = typer.Option(None, help="Repeat a run's random choices."),
) -> None:
    """Torture the store with writers, rollbacks and a SIGKILL, then check what committed.

    Concurrent writer processes append with slow commits and injected rollbacks; one is
    killed mid-commit. Then the log must be dense, and every live subscriber must have seen
    exactly what committed, in log order. Runs in a new SQLite file beside the one named, or
    a new schema (dropped unless --keep). Exit code 1 on any problem.
    """
    from tidings.testing.ordering import torture  # tidings imports its testing tools lazily

    console = Console()
    if appends is None and seconds is None:
        seconds = _DEFAULT_SECONDS
    with console.status("starting", spinner="dots") as status:
        report = asyncio.run(
            torture(
                url,
                writers=writers,
                tasks=tasks,
                appends=appends,
                seconds=seconds,
                subscribers=subscribers,
                kill=kill,
                seed=seed,
                keep=keep,
                progress=lambda phase: status.update(f"{phase}..."),
            )
        )
    console.print(_table(report))
    _print_verdict(console, report)
    if not report.ok:
        raise typer.Exit(code=1)


def _table(report: OrderingReport) -> Table:
    killed = "none"
    if report.killed_worker is not None:
        moment = "mid-commit" if report.killed_in_commit else "between commits"
        killed = f"writer {report.killed_worker} ({moment})"
    rows = [
        ("target", report.target),
        ("seed", str(report.seed)),
        ("writers / subscribers", f"{report.writers} / {report.subscribers}"),
        ("events in the log", str(report.events)),
        ("appends begun", str(report.appends)),
        ("events acknowledged", str(report.acknowledged)),
        ("events failed", str(report.failed)),
        ("rollbacks / conflicts", f"{report.rollbacks} / {report.conflicts}"),
        ("slow commits", str(report.slow_commits)),
        ("killed", killed),
        ("in doubt (committed)", f"{report.in_doubt} ({report.in_doubt_committed})"),
        ("duration", f"{report.duration:.1f} s"),
    ]
    table = Table("", "", title="ordering torture test", show_header=False)
    for name, value in rows:
        table.add_row(name, value)
    return table


def _print_verdict(console: Console, report: OrderingReport) -> None:
    if report.ok:
        console.print("[green]ok[/]: dense log; every subscriber saw exactly what committed")
        return
    console.print(f"[red]FAILED[/]: {len(report.problems)} problems")
    for problem in report.problems:
        console.print(f"  - {problem}", highlight=False)
