"""The ordering torture test, per backend, and proof that its checker catches a broken log."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest
from typer.testing import CliRunner

from tidings.cli import app
from tidings.eventstore import RecordedEvent, VerifyReport
from tidings.eventstore.base import StoreBase
from tidings.testing.faults import read_lines, start_worker
from tidings.testing.ordering import Evidence, Logged, OrderingReport, Seen, check, torture
from tidings.testing.ordering_worker import AppendOutcome

POSTGRES_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
SECONDS: Final = 8.0
"""How long the writers append: with start-up and checks a run stays near 12 s on 2 cores."""
MIN_EVENTS: Final = 500


def _url(backend: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db" if backend == "sqlite" else POSTGRES_URL


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_torture_finds_no_problem_with_kills_rollbacks_and_conflicts(
    backend: str, tmp_path: Path
) -> None:
    report = await torture(_url(backend, tmp_path), seconds=SECONDS, seed=20_240_601)

    assert report.problems == ()
    assert report.events > MIN_EVENTS
    assert report.rollbacks > 0
    assert report.conflicts > 0
    assert report.killed_worker is not None
    assert report.events == report.acknowledged + report.in_doubt_committed + 1  # + sentinel


@pytest.mark.slow
def test_cli_verify_ordering_exits_zero_on_a_sound_store(tmp_path: Path) -> None:
    args = ["verify-ordering", f"sqlite:///{tmp_path}/cli.db", "--writers", "2", "--tasks", "4"]
    result = CliRunner().invoke(app, [*args, "--seconds", "2", "--subscribers", "1"])

    assert result.exit_code == 0, result.output
    assert "every subscriber saw exactly what committed" in result.output


@pytest.mark.slow
async def test_torture_reports_a_subscriber_that_skips_an_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subscribe = StoreBase.subscribe

    def skipping(self: StoreBase, **options: Any) -> AsyncIterator[RecordedEvent]:
        async def records() -> AsyncIterator[RecordedEvent]:
            async for record in subscribe(self, **options):
                if record.position != 10:
                    yield record

        return records()

    monkeypatch.setattr(StoreBase, "subscribe", skipping)
    url = _url("sqlite", tmp_path)

    report = await torture(url, writers=2, tasks=2, seconds=1, subscribers=1, kill=False, seed=3)

    assert report.problems == ("gap: subscriber 1: skipped positions 10..10",)


def test_cli_verify_ordering_exits_one_on_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = dict.fromkeys(("writers", "subscribers", "events", "appends", "acknowledged"), 1)
    counts |= dict.fromkeys(("failed", "rollbacks", "conflicts", "slow_commits", "in_doubt"), 0)
    broken = OrderingReport(
        target="fake",
        seed=1,
        **counts,
        killed_worker=None,
        killed_in_commit=False,
        in_doubt_committed=0,
        duration=0.1,
        problems=("gap: log: 3..3",),
    )

    async def fake_torture(url: str, **options: object) -> OrderingReport:
        return broken

    monkeypatch.setattr("tidings.testing.ordering.torture", fake_torture)
    result = CliRunner().invoke(app, ["verify-ordering", "sqlite:///unused.db"])

    assert result.exit_code == 1
    assert "gap: log: 3..3" in result.output


async def test_worker_killed_with_sigkill_reports_the_signal(tmp_path: Path) -> None:
    out = tmp_path / "journal.jsonl"
    args = ["--url", f"sqlite:///{tmp_path}/w.db", "--tasks", "2", "--seconds", "60"]
    worker = await start_worker("tidings.testing.ordering_worker", *args, "--out", str(out))
    try:
        await worker.wait_for(lambda line: line.startswith("in-commit"), timeout=30)
        assert worker.kill()
        assert await worker.wait(timeout=10) == -signal.SIGKILL
    finally:
        await worker.aclose()
    assert worker.killed
    assert read_lines(out)


def test_read_lines_drops_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": ')

    assert read_lines(path) == [b'{"a": 1}', b'{"b": 2}']


# -- the checker, on fabricated evidence ------------------------------------------------------


def _log(count: int) -> list[Logged]:
    """A sound log: ``count`` events alternating over two streams."""
    return [Logged(p, f"s{p % 2}", (p + 1) // 2, f"e{p}") for p in range(1, count + 1)]


def _seen(log: list[Logged]) -> list[Seen]:
    return [Seen(e.position, e.event_id) for e in log]


def _acked(entry: Logged, *, status: str = "acked") -> AppendOutcome:
    version, position = (entry.version, entry.position) if status == "acked" else (None, None)
    return AppendOutcome(
        0, 0, entry.position, entry.stream_id, (entry.event_id,), status, version, position
    )


def _evidence(log: list[Logged], *subscribers: list[Seen], extra: list[AppendOutcome]) -> Evidence:
    appends = [_acked(e) for e in log] + extra
    head = log[-1].position if log else 0
    return Evidence(log, head, list(subscribers), appends, VerifyReport(True, len(log), 2))


def test_check_passes_sound_evidence() -> None:
    log = _log(6)

    assert check(_evidence(log, _seen(log), _seen(log), extra=[])) == []


def test_check_reports_a_gap_in_a_subscriber_sequence() -> None:
    log = _log(6)
    skipped = [s for s in _seen(log) if s.position != 4]

    problems = check(_evidence(log, _seen(log), skipped, extra=[]))

    assert problems == ["gap: subscriber 2: skipped positions 4..4"]


def test_check_reports_a_duplicate_in_a_subscriber_sequence() -> None:
    log = _log(6)
    seen = _seen(log)
    repeated = [*seen[:3], seen[2], *seen[3:]]

    problems = check(_evidence(log, repeated, extra=[]))

    assert problems == ["duplicate: subscriber 1: repeated positions 3"]


def test_check_reports_a_reorder_in_a_subscriber_sequence() -> None:
    log = _log(6)
    seen = _seen(log)
    swapped = [seen[0], seen[2], seen[1], *seen[3:]]

    problems = check(_evidence(log, swapped, extra=[]))

    assert any(p.startswith("reorder: subscriber 1") for p in problems), problems


def test_check_reports_a_hole_in_the_log() -> None:
    log = [e for e in _log(6) if e.position != 3]

    problems = check(_evidence(log, _seen(log), extra=[]))

    assert "gap: log: skipped positions 3..3" in problems


def test_check_reports_a_lost_acknowledged_event() -> None:
    log = _log(6)
    lost = _acked(Logged(7, "s1", 4, "e7"))

    problems = check(_evidence(log, _seen(log), extra=[lost]))

    assert problems == ["lost (acknowledged, not in the log): writer 0 task 0 append 7 to s1"]


def test_check_reports_an_event_of_a_rolled_back_append() -> None:
    log = _log(6)
    rolled_back = _acked(log[5], status="rollback")
    appends = [_acked(e) for e in log[:5]] + [rolled_back]

    problems = check(Evidence(log, 6, [_seen(log)], appends))

    assert problems == ["phantom (rollback but in the log): writer 0 task 0 append 6 to s0"]


def test_check_reports_a_stream_version_out_of_order() -> None:
    log = _log(6)
    log[1], log[3] = log[1]._replace(version=2), log[3]._replace(version=1)

    problems = check(_evidence(log, _seen(log), extra=[]))

    assert problems[0].startswith("stream: s0 has version 2 at position 2, expected 1")
