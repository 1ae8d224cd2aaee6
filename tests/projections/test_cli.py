"""``tidings projections``: status, rebuild with progress, retry, failures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest
from tests.projections.apps import app as totals_app
from tests.projections.helpers import eventually, hits, poison
from typer.testing import CliRunner

from tidings import Event
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.adapters.sqlite.projections import SQLiteReadModel
from tidings.cli import app
from tidings.projections import ProjectionFailedError, ProjectionKey, ProjectionRunner, Status

APP = "tests.projections.apps:app"


@pytest.fixture
def urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The event store and read model files, named in the environment."""
    events, views = tmp_path / "events.db", tmp_path / "views.db"
    monkeypatch.setenv("TIDINGS_EVENTSTORE_URL", f"sqlite:///{events}")
    monkeypatch.setenv("TIDINGS_READMODEL_URL", f"sqlite:///{views}")
    return events, views


def _serve_v1(events: Path, views: Path, appended: list[Event]) -> None:
    """Run totals v1 to the head of ``appended``, then append two more events."""

    async def work() -> None:
        async with SQLiteEventStore(events) as store, SQLiteReadModel(views) as model:
            result = await store.append("s", appended)
            async with ProjectionRunner(store, model, list(totals_app.projections)) as runner:
                with contextlib.suppress(ProjectionFailedError):  # the retry test wants it
                    await runner.wait_for(result.position, timeout=5)
            await store.append("s", hits("c", "d"))

    asyncio.run(work())


def _state(views: Path, version: int) -> object:
    async def read() -> object:
        async with SQLiteReadModel(views) as model:
            return await model.lookup(ProjectionKey("totals", version))

    return asyncio.run(read())


def test_status_shows_position_lag_and_phase(urls: tuple[Path, Path]) -> None:
    _serve_v1(*urls, hits("a", "b"))
    result = CliRunner().invoke(app, ["projections", "status", "--app", APP])
    assert result.exit_code == 0, result.output
    assert "totals" in result.output
    assert "2/4" in result.output
    assert "stopped" in result.output


def test_rebuild_reports_progress_and_switches_to_the_new_version(
    urls: tuple[Path, Path],
) -> None:
    _serve_v1(*urls, hits("a", "b"))
    args = ["projections", "rebuild", "totals", "--app", "tests.projections.apps:app_v2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "totals v2" in result.output
    assert "4/4" in result.output
    assert "totals v2 is active" in result.output


def test_rebuild_of_the_active_version_explains_how_to_rebuild(urls: tuple[Path, Path]) -> None:
    _serve_v1(*urls, hits("a"))
    result = CliRunner().invoke(app, ["projections", "rebuild", "totals", "--app", APP])
    assert result.exit_code == 0, result.output
    assert "bump the projection's version" in result.output


def test_retry_clears_the_failed_status(urls: tuple[Path, Path]) -> None:
    _serve_v1(*urls, poison())
    before = _state(urls[1], 1)
    result = CliRunner().invoke(app, ["projections", "retry", "totals"])
    assert result.exit_code == 0, result.output
    assert "retrying: totals v1" in result.output
    assert getattr(before, "status", None) is Status.FAILED
    assert getattr(_state(urls[1], 1), "status", None) is Status.RUNNING


def test_failures_lists_the_skipped_events(urls: tuple[Path, Path]) -> None:
    totals_app.projections[0].on_error = "skip"
    try:
        _serve_v1(*urls, [*hits("a"), *poison()])
    finally:
        totals_app.projections[0].on_error = "stop"
    result = CliRunner().invoke(app, ["projections", "failures", "totals"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "count.poison" in result.output
    assert "poisoned at 2" in result.output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.projections.apps:not_an_app", "must name a ProjectionApp"),
        ("tests.projections.nowhere:app", "cannot import"),
        ("tests.projections.apps", "expected 'module:attribute'"),
    ],
)
def test_bad_app_exits_one_with_a_clear_message(
    urls: tuple[Path, Path], spec: str, message: str
) -> None:
    result = CliRunner().invoke(app, ["projections", "status", "--app", spec])
    assert result.exit_code == 1
    assert message in result.output


async def test_run_applies_projections_until_interrupted_then_releases_its_lease(
    urls: tuple[Path, Path],
) -> None:
    events, views = urls
    code = "from tidings.cli import main; main()"
    args = ["projections", "run", "--app", APP, "--owner", "cli-runner", "--lease-ttl", "30"]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        stdout=PIPE,
        stderr=PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
        async with SQLiteEventStore(events) as store, SQLiteReadModel(views) as model:
            await store.append("s", hits("a", "b"))
            await eventually(lambda: _position_is(model, 2), timeout=10)
            child.send_signal(signal.SIGINT)
            code_ = await asyncio.wait_for(child.wait(), timeout=30)
            state = await model.lookup(ProjectionKey("totals", 1))
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert line.decode().strip() == "running totals"
    assert code_ == 0
    assert state is not None
    assert state.lease_owner is None


async def _position_is(model: SQLiteReadModel, position: int) -> bool:
    state = await model.lookup(ProjectionKey("totals", 1))
    return state is not None and state.position == position
