"""Find benchmark modules, run their cases, and collect the figures.

Cases of one module are measured in rounds: every case once per round, ``repeat`` rounds, so
slow drift of the machine (thermal, other load) touches every case alike instead of whichever
case happened to run last. Each measured run is timed with `time.perf_counter` around the
case's ``run`` only; the figure is work items per second.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import pkgutil
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

from benchmarks.api import Case, Skip

__all__ = [
    "HARNESS_MODULES",
    "Outcome",
    "Point",
    "Settings",
    "available",
    "cases_of",
    "load",
    "measure_once",
    "run_all",
    "run_module",
    "skipped_module",
]

HARNESS_MODULES = frozenset({"api", "runner", "report", "plots"})
"""Modules of the `benchmarks` package that are the harness, not benchmarks."""

Status = Literal["ok", "skipped", "failed"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    """How to run: quick mode (smaller sizes) and the number of measured runs per figure."""

    quick: bool = False
    repeat: int = 5


@dataclass
class Point:
    """The measured runs of one case at one size (x value), as work items per second."""

    x: int
    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """The median of the runs (the figure reported)."""
        return statistics.median(self.runs)


@dataclass
class Outcome:
    """What happened to one case: its points, or why it was skipped or failed."""

    module: str
    case: Case
    points: list[Point] = field(default_factory=list)
    status: Status = "ok"
    reason: str = ""

    def point(self, x: int) -> Point | None:
        """Return the point measured at ``x``; a single-size case answers for any ``x``."""
        if not self.points or self.status != "ok":
            return None
        if not self.case.is_curve:
            return self.points[0]
        return next((p for p in self.points if p.x == x), None)


def available() -> list[str]:
    """Return the names of the benchmark modules, sorted."""
    import benchmarks

    names = (info.name for info in pkgutil.iter_modules(benchmarks.__path__))
    return sorted(n for n in names if not n.startswith("_") and n not in HARNESS_MODULES)


def load(name: str) -> ModuleType:
    """Import a benchmark module; `Skip` (or an ImportError) says it cannot run here."""
    try:
        return importlib.import_module(f"benchmarks.{name}")
    except ImportError as exc:
        raise Skip(f"cannot import: {exc}") from exc


def cases_of(module: ModuleType) -> list[Case]:
    """Return a module's cases, checking that baselines and peers name cases of the module."""
    cases = list(getattr(module, "CASES", ()))
    names = {case.name for case in cases}
    for case in cases:
        for ref in (case.baseline, *case.peers):
            if ref is not None and ref not in names:
                raise ValueError(f"{module.__name__}: {case.name} refers to unknown case {ref!r}")
    return cases


def run_module(
    name: str, cases: Sequence[Case], settings: Settings, progress: Progress | None = None
) -> list[Outcome]:
    """Measure every case of a module: warm-up runs, then ``settings.repeat`` rounds."""
    outcomes = [Outcome(name, case) for case in cases]
    for outcome in outcomes:
        _note(progress, f"{name}: warm-up {outcome.case.name}")
        smallest = min(outcome.case.points(quick=settings.quick))
        for _ in range(outcome.case.warmup):
            _attempt(outcome, smallest)
    for round_no in range(1, settings.repeat + 1):
        for outcome in outcomes:
            _note(progress, f"{name}: round {round_no}/{settings.repeat} {outcome.case.name}")
            _run_round(outcome, settings)
    return outcomes


def _run_round(outcome: Outcome, settings: Settings) -> None:
    for x in outcome.case.points(quick=settings.quick):
        figure = _attempt(outcome, x)
        if figure is None:
            return
        point = next((p for p in outcome.points if p.x == x), None)
        if point is None:
            point = Point(x)
            outcome.points.append(point)
        point.runs.append(figure)


def _attempt(outcome: Outcome, x: int) -> float | None:
    """Measure once; on Skip or an error mark the outcome and return None."""
    if outcome.status != "ok":
        return None
    try:
        return measure_once(outcome.case, x)
    except Skip as exc:
        outcome.status, outcome.reason = "skipped", exc.reason
    except Exception as exc:
        outcome.status, outcome.reason = "failed", f"{type(exc).__name__}: {exc}"
    outcome.points.clear()
    return None


def measure_once(case: Case, size: int) -> float:
    """Run ``setup``, time ``run``, run ``teardown``; return work items per second."""
    hooks = (case.run, case.setup, case.teardown)
    if any(inspect.iscoroutinefunction(hook) for hook in hooks if hook is not None):
        return asyncio.run(_measure_async(case, size))
    return _measure_sync(case, size)


def _measure_sync(case: Case, size: int) -> float:
    if case.setup is not None:
        case.setup(size)
    try:
        gc.collect()
        start = time.perf_counter()
        result = case.run(size)
        elapsed = time.perf_counter() - start
    finally:
        if case.teardown is not None:
            case.teardown()
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError(f"{case.name}: run returned an awaitable; declare it with 'async def'")
    return _throughput(case, size, result, elapsed)


async def _measure_async(case: Case, size: int) -> float:
    if case.setup is not None:
        await _maybe_await(case.setup(size))
    try:
        gc.collect()
        start = time.perf_counter()
        result = await _maybe_await(case.run(size))
        elapsed = time.perf_counter() - start
    finally:
        if case.teardown is not None:
            await _maybe_await(case.teardown())
    return _throughput(case, size, result, elapsed)


async def _maybe_await(value: object) -> object:
    return await value if inspect.isawaitable(value) else value


def _throughput(case: Case, size: int, result: object, elapsed: float) -> float:
    if result is None:
        items = size
    elif isinstance(result, int) and not isinstance(result, bool):
        items = result
    else:
        raise TypeError(f"{case.name}: run must return None or the number of work items")
    if elapsed <= 0:
        raise ValueError(f"{case.name}: the run took no measurable time; raise its size")
    return items / elapsed


def _note(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def skipped_module(name: str, reason: str) -> Outcome:
    """Return the outcome recorded for a module that cannot be imported here."""
    case = Case(name="*", run=lambda _: None, description="the whole module")
    return Outcome(name, case, status="skipped", reason=reason)


def run_all(
    names: Iterable[str], settings: Settings, progress: Progress | None = None
) -> list[Outcome]:
    """Load and measure the named modules in order; unloadable modules are recorded as skipped."""
    outcomes: list[Outcome] = []
    for name in names:
        try:
            module = load(name)
        except Skip as exc:
            outcomes.append(skipped_module(name, exc.reason))
            continue
        outcomes.extend(run_module(name, cases_of(module), settings, progress))
    return outcomes
