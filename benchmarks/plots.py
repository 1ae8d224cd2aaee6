"""Draw the curves: one PNG per (module, plot name), throughput against the x values.

The top panel shows work items per second for every curve case in the plot; the bottom panel,
when any of them has a baseline, shows ours / baseline, the figure the tables report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from benchmarks.report import Row

__all__ = ["draw"]


def draw(rows: Sequence[Row], directory: Path) -> list[Path]:
    """Draw every curve in ``rows`` into ``directory``; return the PNG paths written."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        if row.curve and row.status == "ok":
            groups[(row.benchmark, row.plot)].append(row)
    directory.mkdir(parents=True, exist_ok=True)
    return [_draw_one(directory, key, group) for key, group in sorted(groups.items())]


def _draw_one(directory: Path, key: tuple[str, str], group: list[Row]) -> Path:
    benchmark, plot = key
    series: dict[str, list[Row]] = defaultdict(list)
    for row in group:
        series[row.case].append(row)
    with_ratio = any(row.baseline for row in group)
    fig, axes = plt.subplots(
        2 if with_ratio else 1, 1, sharex=True, squeeze=False, figsize=(8, 7 if with_ratio else 4.5)
    )
    top = axes[0][0]
    for case, points in series.items():
        xs = [p.x for p in points]
        top.plot(xs, [p.median for p in points], marker="o", label=case)
        top.fill_between(
            xs, [min(p.runs) for p in points], [max(p.runs) for p in points], alpha=0.15
        )
    medians = [row.median for row in group if row.median]
    if medians and max(medians) / min(medians) >= 20:
        top.set_yscale("log")  # raw libraries can be 10x faster; keep tidings' line readable
    top.set_ylabel(group[0].unit)
    top.set_title(f"{benchmark}: {plot} (median, band = min..max)")
    top.legend(fontsize="small")
    if with_ratio:
        bottom = axes[1][0]
        for case, points in series.items():
            if points[0].baseline:
                label = f"{case} / {points[0].baseline.name}"
                ratios = [p.baseline.ratio if p.baseline else float("nan") for p in points]
                bottom.plot([p.x for p in points], ratios, marker="o", label=label)
        bottom.axhline(1.0, color="grey", linewidth=0.8)
        bottom.set_ylabel("ratio ours / baseline")
        bottom.legend(fontsize="small")
    xvalues = sorted({row.x for row in group if row.x is not None})
    for ax in axes[:, 0]:
        if xvalues[0] > 0 and xvalues[-1] / xvalues[0] >= 10:
            ax.set_xscale("log")
        ax.set_xticks(xvalues, [str(x) for x in xvalues])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    axes[-1][0].set_xlabel(group[0].x_label)
    fig.tight_layout()
    path = directory / f"{benchmark}-{plot}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
