"""Topics: ``tidings topics describe URL TOPIC`` and ``tidings topics migrate SRC DST TOPIC``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from tidings.errors import TidingsError
from tidings.messaging.migrate import (
    DEFAULT_BATCH,
    MigrationProgress,
    MigrationReport,
    TopicCopy,
    migrate_topic,
)
from tidings.messaging.ports import TopicInfo
from tidings.messaging.router import connected
from tidings.messaging.transfer import TopicTransfer

__all__ = ["register"]

_SHOWN: int = 10
"""How many skipped messages the summary names."""

topics = typer.Typer(help="Topics: describe one, or migrate one to another broker.")


def register(app: typer.Typer) -> None:
    """Add the ``topics`` command group to the app."""
    app.add_typer(topics, name="topics")


@contextmanager
def _failing_clearly() -> Iterator[None]:
    """Print a tidings error's message (no traceback) and exit with status 1."""
    try:
        yield
    except (TidingsError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


@topics.command("migrate")
def migrate(
    source: str = typer.Argument(..., help="URL of the broker to copy from (sqlite:///app.db)."),
    destination: str = typer.Argument(..., help="URL of the broker to copy to (kafka://...)."),
    topic: str = typer.Argument(..., help="The topic."),
    batch: int = typer.Option(DEFAULT_BATCH, min=1, help="Messages per read and append."),
    include_dlq: bool = typer.Option(
        True, "--include-dlq/--no-include-dlq", help="Also migrate TOPIC.dlq when it exists."
    ),
) -> None:
    """Copy a topic with its keys, per-key order and group positions to another broker.

    Safe to run again: nothing is stored twice. Stop the topic's producers and consumers
    first; events a group acked above its lowest unsettled offset are delivered again.
    """

    async def run(bar: _Bar) -> MigrationReport:
        async with connected(source) as src, connected(destination) as dst:
            return await migrate_topic(
                src, dst, topic, batch=batch, dead_letters=include_dlq, progress=bar.show
            )

    with _failing_clearly(), _Bar() as bar:
        report = asyncio.run(run(bar))
    for copy in report.topics:
        _summarize(copy)
    skipped = report.not_events
    if skipped:
        where = ", ".join(f"{n.topic} {n.partition}@{n.offset}" for n in skipped[:_SHOWN])
        more = f" and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
        typer.echo(
            f"{len(skipped)} message(s) are not events and were not copied: {where}{more}",
            err=True,
        )
        raise typer.Exit(code=1)


def _summarize(copy: TopicCopy) -> None:
    typer.echo(
        f"{copy.topic}: {copy.copied} copied, {copy.already_there} already there,"
        f" {copy.partitions} partition(s)"
    )
    for group, offsets in copy.positions.items():
        for partition, offset in sorted(offsets.items()):
            typer.echo(f"  group {group} -> partition {partition} at {offset}")


@topics.command("describe")
def describe(
    url: str = typer.Argument(..., help="Broker URL."),
    topic: str = typer.Argument(..., help="The topic."),
) -> None:
    """Print a topic's partitions, retention and each group's committed offset per partition."""

    async def run() -> tuple[TopicInfo | None, Mapping[str, Mapping[int, int]]]:
        async with connected(url) as broker:
            if not isinstance(broker, TopicTransfer):
                raise TidingsError(f"{type(broker).__name__} cannot describe topics")
            return await broker.describe_topic(topic), await broker.group_positions(topic)

    with _failing_clearly():
        info, positions = asyncio.run(run())
    if info is None:
        typer.echo(f"error: no topic {topic!r}", err=True)
        raise typer.Exit(code=1)
    retention = info.retention
    typer.echo(
        f"{topic}: {info.partitions} partition(s), retention max_age={retention.max_age}"
        f" max_count={retention.max_count}"
    )
    for group, offsets in sorted(positions.items()):
        places = " ".join(f"{p}@{o}" for p, o in sorted(offsets.items()))
        typer.echo(f"  {group}: {places}")


class _Bar:
    """A rich progress display on stderr: one line per topic, messages read so far."""

    def __init__(self) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} read"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def show(self, step: MigrationProgress) -> None:
        """Update the topic's line."""
        task = self._tasks.get(step.topic)
        if task is None:
            task = self._tasks[step.topic] = self._progress.add_task(step.topic, total=None)
        where = f"{step.topic} partition {step.partition + 1}/{step.partitions}"
        self._progress.update(task, completed=step.read, description=where)

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
