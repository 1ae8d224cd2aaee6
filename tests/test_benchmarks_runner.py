"""The benchmark harness (benchmarks/): measuring, skipping, ratios and the report files."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed

from benchmarks import report
from benchmarks.__main__ import main
from benchmarks.api import Case, Cases, Skip
from benchmarks.runner import Outcome, Settings, available, cases_of, run_all, run_module

FAST = Settings(quick=True, repeat=2)


def _noop(n: int) -> None:
    for _ in range(n):
        pass


def _sleep(n: int) -> int:
    time.sleep(0.002)
    return 10


def _unavailable(size: int) -> None:
    raise Skip("no")


def _measure(*cases: Case, settings: Settings = FAST) -> list[Outcome]:
    return run_module("fake", cases, settings)


def test_each_case_is_measured_repeat_times_after_warmup() -> None:
    calls: list[int] = []

    def run(n: int) -> None:
        calls.append(n)

    [outcome] = _measure(Case(name="c", run=run, size=1000, warmup=1))
    assert outcome.status == "ok"
    assert [len(p.runs) for p in outcome.points] == [2]
    assert calls == [100, 100, 100]  # quick size is a tenth; one warm-up, two measured


def test_throughput_counts_the_items_run_returns() -> None:
    [outcome] = _measure(Case(name="c", run=_sleep, size=1, warmup=0))
    assert 0 < outcome.points[0].median <= 10 / 0.002


def test_async_setup_run_and_teardown_share_one_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def setup(size: int) -> None:
        loops.append(asyncio.get_running_loop())

    async def run(n: int) -> None:
        await asyncio.sleep(0)
        assert asyncio.get_running_loop() is loops[-1]

    async def teardown() -> None:
        assert asyncio.get_running_loop() is loops[-1]

    case = Case(name="a", run=run, setup=setup, teardown=teardown, warmup=0)
    [outcome] = _measure(case)
    assert outcome.status == "ok"
    assert len(loops) == 2


def test_skip_in_setup_is_recorded_not_raised() -> None:
    [skipped, ok] = _measure(
        Case(name="s", run=_noop, setup=_unavailable), Case(name="ok", run=_noop)
    )
    assert (skipped.status, skipped.reason) == ("skipped", "no")
    assert ok.status == "ok"


def test_error_in_run_marks_the_case_failed_and_runs_teardown() -> None:
    torn: list[bool] = []

    def run(n: int) -> None:
        raise RuntimeError("boom")

    case = Case(name="f", run=run, teardown=lambda: torn.append(True))
    [outcome] = _measure(case)
    assert (outcome.status, outcome.reason) == ("failed", "RuntimeError: boom")
    assert torn == [True]


def test_curve_ratios_pair_points_by_x() -> None:
    ours = Case(name="ours", run=_noop, sizes=(1000, 2000, 4000), baseline="raw", peers=("peer",))
    raw = Case(name="raw", run=_noop, sizes=(1000, 2000, 4000))
    peer = Case(name="peer", run=_noop, size=1000)
    rows = report.rows(_measure(ours, raw, peer, settings=Settings(repeat=1)))
    curve = [row for row in rows if row.case == "ours"]
    assert [row.x for row in curve] == [1000, 2000, 4000]
    for row in curve:
        raw_row = next(r for r in rows if r.case == "raw" and r.x == row.x)
        assert row.baseline is not None
        assert row.median is not None
        assert row.baseline.median == raw_row.median
        assert row.baseline.ratio == pytest.approx(row.median / raw_row.median)
        assert [p.name for p in row.peers] == ["peer"]  # a single-size peer answers for every x


def test_quick_mode_measures_smaller_sizes() -> None:
    curve = Case(name="c", run=_noop, sizes=(10, 100, 1000, 10_000))
    assert curve.points(quick=True) == (10, 100)
    assert Case(name="s", run=_noop, size=5000).points(quick=True) == (500,)


def test_unknown_baseline_name_is_rejected() -> None:
    module = type(sys)("fake")
    module.CASES = [Case(name="c", run=_noop, baseline="nope")]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown case 'nope'"):
        cases_of(module)


def test_duplicate_case_names_are_rejected() -> None:
    cases = Cases()
    cases.add("c")(_noop)
    with pytest.raises(ValueError, match="duplicate"):
        cases.add("c")(_noop)


def test_unimportable_module_is_recorded_as_skipped() -> None:
    [outcome] = run_all(["no_such_benchmark"], FAST)
    assert outcome.status == "skipped"
    assert "cannot import" in outcome.reason


def test_harness_modules_are_not_benchmarks() -> None:
    names = available()
    assert "envelope" in names
    assert not {"api", "runner", "report", "plots"} & set(names)


def test_unknown_benchmark_name_is_a_usage_error() -> None:
    assert main(["no_such_benchmark"]) == 2


def test_json_markdown_and_plot_are_written(tmp_path: Path) -> None:
    from benchmarks.plots import draw

    ours = Case(name="ours", run=_noop, sizes=(1000, 4000), baseline="raw")
    raw = Case(name="raw", run=_noop, sizes=(1000, 4000))
    skipped = Case(name="gone", run=_noop, setup=_unavailable)
    rows = report.rows(_measure(ours, raw, skipped))
    plots = draw(rows, tmp_path / "plots")
    env = report.environment(["msgspec"])
    report.write_json(tmp_path / "out.json", rows, env, FAST, plots)
    text = report.markdown(rows, env, FAST, plots, relative_to=tmp_path)

    document = json.loads((tmp_path / "out.json").read_text())
    first = document["results"][0]
    assert first["case"] == "ours"
    assert first["baseline"]["name"] == "raw"
    assert first["ratio"] == pytest.approx(first["median"] / first["baseline"]["median"])
    assert document["results"][-1]["status"] == "skipped"
    assert document["results"][-1]["median"] is None
    assert document["environment"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert [p.name for p in plots] == ["fake-size.png"]
    assert "| fake | gone |" in text
    assert "| gone | - | skipped |" in text
    assert "![fake-size](plots/fake-size.png)" in text
