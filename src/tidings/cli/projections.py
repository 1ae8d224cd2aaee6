"""Projection commands: ``tidings projections status|rebuild|run|retry|failures``.

Projections are user code: ``--app module:attr`` names a `ProjectionApp` (or a list of
projections). URLs come from the options, else from the app, else from the environment
(``TIDINGS_EVENTSTORE_URL``, ``TIDINGS_READMODEL_URL``, ``TIDINGS_URL``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from tidings.errors import TidingsError
from tidings.eventstore import open_event_store
from tidings.eventstore.base import StoreBase
from tidings.projections import (
    ProjectionApp,
    ProjectionKey,
    ProjectionMonitor,
    ProjectionRunner,
    ProjectionStatus,
    ReadModel,
    RebuildProgress,
    Status,
    load_app,
    open_read_model,
    rebuild,
)
from tidings.urls import configured_url

__all__ = ["register"]

projections_app = typer.Typer(
    name="projections", help="Projections: status, rebuilds, runners.", no_args_is_help=True
)
_APP_HELP = "The projections, as module:attr (a ProjectionApp or a list of projections)."
_URL_HELP = "Event store URL (default: the app's, then $TIDINGS_EVENTSTORE_URL, $TIDINGS_URL)."
_RM_HELP = "Read model URL (default: the app's, then $TIDINGS_READMODEL_URL, $TIDINGS_URL)."

APP = typer.Option(None, "--app", "-a", help=_APP_HELP)
URL = typer.Option(None, "--url", "-u", help=_URL_HELP)
READ_MODEL = typer.Option(None, "--read-model", "-r", help=_RM_HELP)


def register(app: typer.Typer) -> None:
    """Add the ``projections`` command group to the app."""
    app.add_typer(projections_app)


@contextlib.asynccontextmanager
async def _opened(
    app: ProjectionApp | None, url: str | None, read_model: str | None
) -> AsyncIterator[tuple[StoreBase, ReadModel]]:
    store_url = url or (app and app.eventstore) or configured_url("eventstore")
    model_url = read_model or (app and app.read_model) or configured_url("readmodel")
    async with open_event_store(store_url) as store, open_read_model(model_url) as model:
        yield store, model


def _run(work: object) -> None:
    try:
        asyncio.run(work)  # type: ignore[arg-type]
    except TidingsError as exc:
        Console(stderr=True).print(f"[red]error[/]: {exc}")
        raise typer.Exit(code=1) from exc


@projections_app.command("status")
def status(
    app: str | None = APP, url: str | None = URL, read_model: str | None = READ_MODEL
) -> None:
    """Show every projection version: position, lag in events and seconds, owner, errors."""

    async def work() -> None:
        loaded = load_app(app) if app else None
        async with _opened(loaded, url, read_model) as (store, model):
            rows = await ProjectionMonitor(store, model).statuses()
        Console().print(_status_table(rows))

    _run(work())


def _status_table(rows: list[ProjectionStatus]) -> Table:
    table = Table(caption="* the active version (the one readers read)")
    for column in ("projection", "v", "phase", "position/head", "lag", "lag s"):
        table.add_column(column, no_wrap=True)
    table.add_column("owner", overflow="fold", min_width=5)
    table.add_column("error", overflow="fold", min_width=5)
    for row in rows:
        table.add_row(
            row.key.name,
            f"{row.key.version}{'*' if row.active else ''}",
            row.phase,
            f"{row.position}/{row.head}",
            str(row.lag_events),
            f"{row.lag_seconds:.3f}",
            row.owner or "",
            row.error or "",
        )
    return table


@projections_app.command("rebuild")
def rebuild_command(
    name: str = typer.Argument(..., help="The projection to rebuild at its code's version."),
    app: str = typer.Option(..., "--app", "-a", help=_APP_HELP),
    url: str | None = URL,
    read_model: str | None = READ_MODEL,
    drop_old: bool = typer.Option(False, help="Drop older versions once switched."),
    owner: str | None = typer.Option(None, help="Lease owner id; reuse it to resume at once."),
) -> None:
    """Build a projection's version side by side, then switch readers to it (resumable)."""
    console = Console()

    async def work() -> None:
        loaded = load_app(app)
        projection = loaded.projection(name)
        async with _opened(loaded, url, read_model) as (store, model):
            before = await model.lookup(projection.key)
            with _progress_bar(console) as bar:
                task = bar.add_task(str(projection.key), total=None, rate="", eta="")
                show = _show(bar, task)
                done = await rebuild(
                    store, model, projection, drop_old=drop_old, on_progress=show, owner=owner
                )
        _report(console, done, already=before is not None and before.active)

    _run(work())


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        console=console,
    )


def _show(bar: Progress, task: TaskID) -> Callable[[RebuildProgress], None]:
    def update(progress: RebuildProgress) -> None:
        eta = "" if progress.eta is None else f"ETA {_duration(progress.eta)}"
        rate = f"{progress.rate:,.0f} events/s" if progress.rate else ""
        total = max(progress.head, progress.position, 1)
        bar.update(task, completed=progress.position, total=total, rate=rate, eta=eta)

    return update


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _report(console: Console, done: RebuildProgress, *, already: bool) -> None:
    key = done.key
    if already:
        console.print(
            f"{key} was already active; it is caught up at {done.position}. "
            "To rebuild side by side, bump the projection's version."
        )
    else:
        console.print(f"[green]{key} is active[/]: readers now read it (position {done.position})")


@projections_app.command("run")
def run(
    app: str = typer.Option(..., "--app", "-a", help=_APP_HELP),
    url: str | None = URL,
    read_model: str | None = READ_MODEL,
    owner: str | None = typer.Option(None, help="This runner's lease owner id."),
    lease_ttl: float = typer.Option(10.0, min=0.1, help="Lease time to live, seconds."),
) -> None:
    """Run the app's projections until interrupted (several runners may run at once)."""

    async def work() -> None:
        loaded = load_app(app)
        async with (
            _opened(loaded, url, read_model) as (store, model),
            ProjectionRunner(store, model, loaded.projections, owner=owner, lease_ttl=lease_ttl),
        ):
            Console().print(f"running {', '.join(p.name for p in loaded.projections)}")
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        _run(work())


@projections_app.command("retry")
def retry(
    name: str = typer.Argument(..., help="The failed projection."),
    version: int | None = typer.Option(None, help="The version (default: every failed one)."),
    url: str | None = URL,
    read_model: str | None = READ_MODEL,
) -> None:
    """Clear a failed projection's error so that runners apply it again from its checkpoint."""

    async def work() -> None:
        async with _opened(None, url, read_model) as (_, model):
            keys = [s.key for s in await model.states() if _matches(s.key, name, version, s.status)]
            for key in keys:
                await model.set_status(key, Status.RUNNING)
        shown = ", ".join(str(k) for k in keys) or f"no failed version of {name!r}"
        Console().print(f"retrying: {shown}")

    _run(work())


def _matches(key: ProjectionKey, name: str, version: int | None, status: Status) -> bool:
    wanted = version is None or key.version == version
    return key.name == name and wanted and status is Status.FAILED


@projections_app.command("failures")
def failures(
    name: str = typer.Argument(..., help="The projection."),
    version: int = typer.Option(1, help="The version."),
    url: str | None = URL,
    read_model: str | None = READ_MODEL,
    limit: int = typer.Option(100, min=1, help="How many."),
) -> None:
    """List the events a projection skipped under its ``skip`` failure policy."""

    async def work() -> None:
        async with _opened(None, url, read_model) as (_, model):
            found = await model.failures(ProjectionKey(name, version), limit=limit)
        table = Table("position", "type", "event id", "error", title=f"{name} v{version}")
        for failure in found:
            table.add_row(
                str(failure.position), failure.event_type, failure.event_id, failure.error
            )
        Console().print(table)

    _run(work())
