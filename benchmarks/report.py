"""Turn outcomes into rows with ratios, and write them as a rich table, JSON and Markdown.

A row is one figure: one case at one size. Its ratio is ours / baseline of work items per
second, both medians from the same run of the harness, so 0.5 means "half as many per second
as the raw baseline" and 2.0 "twice as many".
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from rich.table import Table

from benchmarks.runner import Outcome, Point, Settings

__all__ = ["Comparison", "Row", "environment", "markdown", "rate", "rows", "tables", "write_json"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Comparison:
    """Another case's median at the same size, and our median divided by it."""

    name: str
    median: float
    ratio: float

    def to_json(self) -> dict[str, object]:
        """Return the comparison as JSON values."""
        return {"name": self.name, "median": self.median, "ratio": self.ratio}


@dataclass(frozen=True)
class Row:
    """One figure: a case at one size, or a skipped or failed case."""

    benchmark: str
    case: str
    description: str
    unit: str
    status: str
    reason: str
    curve: bool
    x_label: str
    plot: str
    x: int | None = None
    runs: Sequence[float] = ()
    baseline: Comparison | None = None
    peers: Sequence[Comparison] = field(default_factory=tuple)

    @property
    def median(self) -> float | None:
        """The median of the runs; None when nothing was measured."""
        return statistics.median(self.runs) if self.runs else None

    def to_json(self) -> dict[str, object]:
        """Return the row as JSON values (see README.md for the fields)."""
        base = self.baseline
        return {
            "benchmark": self.benchmark,
            "case": self.case,
            "description": self.description,
            "unit": self.unit,
            "status": self.status,
            "reason": self.reason or None,
            "curve": self.curve,
            "x_label": self.x_label,
            "plot": self.plot if self.curve else None,
            "x": self.x,
            "median": self.median,
            "min": min(self.runs, default=None),
            "max": max(self.runs, default=None),
            "runs": list(self.runs),
            "baseline": base and {"name": base.name, "median": base.median},
            "ratio": base and base.ratio,
            "peers": [peer.to_json() for peer in self.peers],
        }


def rows(outcomes: Sequence[Outcome]) -> list[Row]:
    """Return one row per measured point (or per skipped/failed case), with ratios."""
    index = {(o.module, o.case.name): o for o in outcomes}
    out: list[Row] = []
    for outcome in outcomes:
        if outcome.status != "ok":
            out.append(_row(outcome))
            continue
        for point in outcome.points:
            names = outcome.case.peers
            baseline = _compare(index, outcome, outcome.case.baseline, point)
            peers = [c for c in (_compare(index, outcome, n, point) for n in names) if c]
            out.append(_row(outcome, point, baseline, peers))
    return out


def _compare(
    index: dict[tuple[str, str], Outcome], ours: Outcome, name: str | None, point: Point
) -> Comparison | None:
    other = index.get((ours.module, name)) if name else None
    theirs = other.point(point.x) if other else None
    if name is None or theirs is None:
        return None
    return Comparison(name, theirs.median, point.median / theirs.median)


def _row(
    outcome: Outcome,
    point: Point | None = None,
    baseline: Comparison | None = None,
    peers: Sequence[Comparison] = (),
) -> Row:
    case = outcome.case
    return Row(
        benchmark=outcome.module,
        case=case.name,
        description=case.description,
        unit=case.unit,
        status=outcome.status,
        reason=outcome.reason,
        curve=case.is_curve,
        x_label=case.x_label,
        plot=case.plot or case.x_label,
        x=point.x if point else None,
        runs=tuple(point.runs) if point else (),
        baseline=baseline,
        peers=tuple(peers),
    )


def environment(packages: Iterable[str] = ()) -> dict[str, object]:
    """Return where and when the figures were measured."""
    commit, dirty = _git()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "packages": _versions(["tidings", *packages]),
    }


def _git() -> tuple[str | None, bool | None]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return commit, None if status is None else bool(status)


def _versions(names: Iterable[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in dict.fromkeys(names):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_json(
    path: Path,
    table_rows: Sequence[Row],
    env: dict[str, object],
    settings: Settings,
    plots: Sequence[Path] = (),
) -> None:
    """Write the machine-readable report."""
    document = {
        "environment": env,
        "settings": {"quick": settings.quick, "repeat": settings.repeat},
        "results": [row.to_json() for row in table_rows],
        "plots": [str(p) for p in plots],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def rate(value: float | None) -> str:
    """Format a figure compactly: 1.23M, 456k, 78.9."""
    if value is None:
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _ratio(comparison: Comparison | None, case: str) -> str:
    """Format ``0.42x name``, dropping the ``group/`` prefix the name shares with the case."""
    if comparison is None:
        return "-"
    group, _, rest = comparison.name.partition("/")
    shown = rest if rest and case.startswith(f"{group}/") else comparison.name
    return f"{comparison.ratio:.2f}x {shown}"


def _cells(row: Row, *, peer_separator: str = ", ") -> list[str]:
    """Return the table cells of a row, after the benchmark name."""
    if row.status != "ok":
        return [row.case, "-", row.status, "", "", row.unit, "", row.reason]
    peers = peer_separator.join(_ratio(peer, row.case) for peer in row.peers)
    return [
        row.case,
        f"{row.x_label}={row.x}" if row.curve else str(row.x),
        rate(row.median),
        rate(min(row.runs)),
        rate(max(row.runs)),
        row.unit,
        _ratio(row.baseline, row.case),
        peers or "-",
    ]


HEADERS = ("case", "size", "median", "min", "max", "unit", "vs baseline", "vs peers")


def _load(env: dict[str, object]) -> str:
    load = env.get("load_average")
    return " ".join(f"{x:.2f}" for x in load) if isinstance(load, list) else "unknown"


def tables(table_rows: Sequence[Row], settings: Settings) -> list[Table]:
    """Return the rows as rich tables for the terminal, one per benchmark module."""
    runs = f"medians of {settings.repeat} runs{' (quick)' if settings.quick else ''}"
    out: list[Table] = []
    for benchmark in dict.fromkeys(row.benchmark for row in table_rows):
        table = Table(*HEADERS, title=f"{benchmark}: {runs}", title_justify="left")
        for column in table.columns[:-1]:
            column.no_wrap = True
        table.columns[-1].min_width = 30
        for column in table.columns[1:5]:
            column.justify = "right"
        for row in table_rows:
            if row.benchmark == benchmark:
                table.add_row(*_cells(row, peer_separator="\n"))
        out.append(table)
    return out


def markdown(
    table_rows: Sequence[Row],
    env: dict[str, object],
    settings: Settings,
    plots: Sequence[Path] = (),
    *,
    relative_to: Path | None = None,
) -> str:
    """Return the rows as a Markdown document: environment line, table, plots."""
    packages = env.get("packages")
    versions = (
        ", ".join(f"{k} {v}" for k, v in packages.items()) if isinstance(packages, dict) else ""
    )
    dirty = " (dirty)" if env["git_dirty"] else ""
    lines = [
        "# Benchmark results",
        "",
        f"Python {env['python']}, {env['cpu_count']} CPUs (load {_load(env)}), {env['date']}, "
        f"commit {env['git_commit'] or 'none'}{dirty}; {versions}.",
        f"Medians of {settings.repeat} runs{' (quick mode)' if settings.quick else ''}; "
        "ratios are ours / theirs in work items per second.",
        "",
        "| benchmark | " + " | ".join(HEADERS) + " |",
        "|---|"
        + "|".join("---:" if i in (1, 2, 3, 4) else "---" for i in range(len(HEADERS)))
        + "|",
    ]
    for row in table_rows:
        cells = [row.benchmark, *_cells(row)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    for plot in plots:
        shown = os.path.relpath(plot, relative_to) if relative_to else str(plot)
        lines += ["", f"![{plot.stem}]({shown})"]
    return "\n".join(lines) + "\n"
