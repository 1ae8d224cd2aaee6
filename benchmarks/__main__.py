"""Command line: ``python -m benchmarks [NAME...] [--quick] [--repeat N] [--json PATH] ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from benchmarks import report
from benchmarks.runner import Outcome, Settings, available, load, run_all


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmark modules (default: all)")
    parser.add_argument("--quick", action="store_true", help="3 runs and smaller sizes")
    parser.add_argument("--repeat", type=int, help="measured runs per figure (default 5, quick 3)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write a Markdown table (default: JSON.md)")
    parser.add_argument("--plots", type=Path, help="directory for PNG curves (default: JSON-plots)")
    parser.add_argument("--list", action="store_true", help="list modules and cases, run nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; return 0, 1 when a case failed, 2 on a usage error."""
    args = parse(argv)
    known = available()
    unknown = [name for name in args.names if name not in known]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    names = args.names or known
    if args.list:
        return _list(names)
    settings = Settings(quick=args.quick, repeat=args.repeat or (3 if args.quick else 5))
    with Console(stderr=True).status("starting") as status:
        outcomes = run_all(names, settings, progress=status.update)
    _report(args, outcomes, settings, names)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def _report(
    args: argparse.Namespace, outcomes: list[Outcome], settings: Settings, names: list[str]
) -> None:
    rows = report.rows(outcomes)
    env = report.environment(_packages(names))
    console = Console() if sys.stdout.isatty() else Console(width=160)  # files get full rows
    for table in report.tables(rows, settings):
        console.print(table)
    plots_dir: Path | None = args.plots
    if plots_dir is None and args.json is not None:
        plots_dir = args.json.with_name(f"{args.json.stem}-plots")
    plots: list[Path] = []
    if plots_dir is not None and any(row.curve and row.status == "ok" for row in rows):
        from benchmarks.plots import draw  # matplotlib only when there is something to draw

        plots = draw(rows, plots_dir)
    for row in rows:
        if row.status != "ok":
            console.print(f"[yellow]{row.benchmark} {row.case} {row.status}[/]: {row.reason}")
    if args.json is not None:
        report.write_json(args.json, rows, env, settings, plots)
    markdown_path: Path | None = args.markdown
    if markdown_path is None and args.json is not None:
        markdown_path = args.json.with_suffix(".md")
    if markdown_path is not None:
        text = report.markdown(rows, env, settings, plots, relative_to=markdown_path.parent)
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(text, encoding="utf-8")
    for path in (args.json, markdown_path, *plots):
        if path is not None:
            console.print(f"wrote {path}")


def _packages(names: list[str]) -> list[str]:
    """Return the distributions the modules name in ``PACKAGES`` (versions go in the report)."""
    found: list[str] = []
    for name in names:
        module = sys.modules.get(f"benchmarks.{name}")
        found += list(getattr(module, "PACKAGES", ()))
    return found


def _list(names: list[str]) -> int:
    for name in names:
        try:
            module = load(name)
        except Exception as exc:
            print(f"{name}: cannot load ({exc})")
            continue
        print(name)
        for case in getattr(module, "CASES", ()):
            print(f"  {case.name:40} {case.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
