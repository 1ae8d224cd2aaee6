"""The command line of the tableless outbox: ``tidings outbox slot ...`` and option errors.

Every test runs the typer app in-process (CliRunner) against the shared PostgreSQL, on a slot
of its own that the ``slot`` fixture drops afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from tests.outbox.wal_support import POSTGRES_URL, drop_slot, event, new_slot, write
from typer.testing import CliRunner

from tidings.adapters.postgres.outbox_wal import PostgresWalOutboxSource
from tidings.cli import app
from tidings.errors import ConfigurationError
from tidings.outbox.sources import open_source

WAL_URL = f"{POSTGRES_URL}?source=wal"


@pytest.fixture
def slot() -> Iterator[str]:
    name = new_slot()
    try:
        yield name
    finally:
        asyncio.run(drop_slot(name))


def run(*args: str, given: str | None = None) -> Result:
    return CliRunner().invoke(app, ["outbox", *args], input=given)


@pytest.mark.postgres
def test_slot_create_makes_the_slot_once(slot: str) -> None:
    created = run("slot", "create", WAL_URL, "--slot", slot)
    again = run("slot", "create", WAL_URL, "--slot", slot)
    assert (created.exit_code, created.stdout) == (0, f"created slot {slot}\n")
    assert (again.exit_code, again.stdout) == (0, f"slot {slot} exists\n")


@pytest.mark.postgres
def test_slot_status_shows_the_backlog_and_that_no_relay_reads(slot: str) -> None:
    assert run("slot", "create", f"{WAL_URL}&slot={slot}").exit_code == 0  # named by the URL
    asyncio.run(write([event(1), event(2)]))
    result = run("slot", "status", POSTGRES_URL, "--slot", slot)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"slot: {slot}", "relay: none", "decoding now: no"]
    assert lines[-2:] == ["wal_status: reserved", "backlog: 2"]


@pytest.mark.postgres
def test_slot_drop_with_yes_removes_the_slot(slot: str) -> None:
    run("slot", "create", WAL_URL, "--slot", slot)
    dropped = run("slot", "drop", WAL_URL, "--slot", slot, "--yes")
    missing = run("slot", "status", WAL_URL, "--slot", slot)
    assert (dropped.exit_code, dropped.stdout) == (0, f"dropped slot {slot}\n")
    assert missing.exit_code == 1
    assert missing.stderr == f"error: replication slot {slot!r} does not exist\n"


async def read_slot(slot: str) -> list[str]:
    """Run ``slot status`` and ``slot drop`` while a source on ``slot`` is its active reader."""
    async with PostgresWalOutboxSource(POSTGRES_URL, slot=slot) as source:
        assert await source.activate()
        status = await asyncio.to_thread(run, "slot", "status", WAL_URL, "--slot", slot)
        drop = await asyncio.to_thread(run, "slot", "drop", WAL_URL, "--slot", slot, "--yes")
        assert (status.exit_code, drop.exit_code) == (0, 1)
        return [*status.stdout.splitlines()[1:2], drop.stderr]


@pytest.mark.postgres
def test_slot_status_shows_a_running_relay_and_drop_refuses_it(slot: str) -> None:
    status, refused = asyncio.run(read_slot(slot))
    assert status == "relay: running"
    assert refused == f"error: a relay is reading slot {slot!r}: stop it first\n"
    assert run("slot", "drop", WAL_URL, "--slot", slot, "--yes").exit_code == 0  # once it left


@pytest.mark.postgres
def test_slot_drop_declined_keeps_the_slot(slot: str) -> None:
    run("slot", "create", WAL_URL, "--slot", slot)
    declined = run("slot", "drop", WAL_URL, "--slot", slot, given="n\n")
    assert declined.exit_code == 1  # click's Abort
    assert run("slot", "status", WAL_URL, "--slot", slot).exit_code == 0


@pytest.mark.postgres
def test_slot_drop_of_a_missing_slot_says_so(slot: str) -> None:
    result = run("slot", "drop", WAL_URL, "--slot", slot, "--yes")
    assert (result.exit_code, result.stdout) == (0, f"no slot {slot}\n")


def test_slot_command_rejects_a_bad_slot_name() -> None:
    result = run("slot", "create", WAL_URL, "--slot", "Bad-Name")
    assert result.exit_code == 1
    assert "slot name 'Bad-Name'" in result.stderr


@pytest.mark.parametrize("option", [["--schema", "shop"], ["--table", "t"], ["--retention", "5"]])
def test_relay_with_a_table_option_on_the_wal_source_is_a_clean_error(
    option: list[str], tmp_path: Path
) -> None:
    result = run("relay", WAL_URL, f"sqlite:///{tmp_path / 'broker.db'}", "--drain", *option)
    assert result.exit_code == 1
    assert f"has no option {option[0][2:]} (it takes: " in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_status_with_a_table_option_on_the_wal_source_is_a_clean_error() -> None:
    result = run("status", WAL_URL, "--schema", "shop", "--table", "t")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: the 'wal' outbox source for postgresql:// has no option"
    )
    assert "schema, table (it takes: " in result.stderr


def test_open_source_names_the_options_a_source_takes() -> None:
    with pytest.raises(ConfigurationError, match=r"has no option schema \(it takes: .*slot"):
        open_source(WAL_URL, schema="public")
    assert open_source(WAL_URL, slot="tidings_x").slot == "tidings_x"  # type: ignore[attr-defined]


@pytest.mark.postgres
def test_outbox_status_never_creates_a_slot(slot: str) -> None:
    result = run("status", f"{WAL_URL}&slot={slot}")
    assert result.exit_code == 1, result.output
    again = run("slot", "create", WAL_URL, "--slot", slot)
    assert (again.exit_code, again.stdout) == (0, f"created slot {slot}\n")  # it was not there


@pytest.mark.postgres
def test_outbox_status_reads_an_existing_slot(slot: str) -> None:
    assert run("slot", "create", WAL_URL, "--slot", slot).exit_code == 0
    asyncio.run(write([event(1)]))
    result = run("status", f"{WAL_URL}&slot={slot}")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "backlog: 1"
