"""The command line: version, demo, doctor and the event store commands."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from tidings import Event, __version__
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.cli import app

runner = CliRunner()


def _fill(path: Path) -> None:
    async def fill() -> None:
        async with SQLiteEventStore(path) as store:
            await store.append("order-1", [Event(type="a.b", source="/t", data={"n": 1})])
            await store.append("order-2", [Event(type="a.c", source="/t", data={"n": 2})])

    asyncio.run(fill())


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_demo_runs_end_to_end_and_verifies(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--keep", str(tmp_path / "demo.db")])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    rows = sqlite3.connect(tmp_path / "demo.db").execute("SELECT count(*) FROM tidings_events")
    assert rows.fetchone()[0] == 6


def test_doctor_reports_extras_and_a_reachable_sqlite_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    result = runner.invoke(app, ["doctor", url, "--no-local"])
    assert result.exit_code == 0, result.output
    assert "postgres" in result.output
    assert "yes" in result.output


def test_doctor_exits_nonzero_for_an_unreachable_url() -> None:
    result = runner.invoke(app, ["doctor", "postgresql://nobody@127.0.0.1:1/x", "--no-local"])
    assert result.exit_code == 1


def test_streams_and_events_list_what_was_stored(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    _fill(path)
    url = f"sqlite:///{path}"
    listed = runner.invoke(app, ["streams", "--url", url])
    assert "order-1" in listed.output
    assert "order-2" in listed.output
    shown = runner.invoke(app, ["events", "order-2", "--url", url])
    assert "a.c" in shown.output


def test_verify_passes_then_fails_after_tampering(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    _fill(path)
    assert runner.invoke(app, ["verify", f"sqlite:///{path}"]).exit_code == 0
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE tidings_events SET envelope = replace(envelope, '1', '9')")
    result = runner.invoke(app, ["verify", f"sqlite:///{path}"])
    assert result.exit_code == 1
    assert "altered" in result.output


def test_tail_prints_events_after_a_position(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    _fill(path)
    result = runner.invoke(
        app, ["tail", "--url", f"sqlite:///{path}", "--after", "0", "--count", "2"]
    )
    assert result.exit_code == 0
    assert "order-1@1" in result.output
    assert "order-2@1" in result.output
