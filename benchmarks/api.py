"""What a benchmark module uses to declare its cases.

A benchmark module (``benchmarks/<name>.py``) defines a module-level ``CASES``: any iterable of
`Case`, usually a `Cases` list filled with its ``add`` decorator::

    CASES = Cases()

    @CASES.add(size=100_000)
    def raw_encode(n: int) -> None:
        for _ in range(n):
            encode(DOC)

    @CASES.add("ours.encode", baseline="raw_encode", peers=("orjson_encode",))
    def ours_encode(n: int) -> None: ...

One measured run is ``setup(size)`` (untimed), ``run(size)`` (timed with
`time.perf_counter`), ``teardown()`` (untimed, always). The figure of a run is
``work items / elapsed seconds``; the work items are ``size`` unless ``run`` returns an int.
Any of the three may be ``async def``: the run then happens inside its own event loop, so
whatever ``setup`` opens (a connection, a pool) belongs to that loop and must be closed by
``teardown``. Raising `Skip` anywhere (or at import time) records the case as skipped.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["Body", "Case", "Cases", "Hook", "Skip", "skip_unless_reachable"]

Body = Callable[[int], int | Awaitable[int | None] | None]
"""The timed part of a case: does ``size`` work items (or returns how many it did)."""

Hook = Callable[..., object]
"""An untimed ``setup(size)`` or ``teardown()``; sync or async."""

B = TypeVar("B", bound=Body)


class Skip(Exception):
    """Raised by a case (or a module at import time) that cannot run here; the reason is kept."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class Case:
    """One measured piece of work.

    Attributes:
        name: Unique within the module; baselines and peers refer to cases by this name.
        run: The timed body, called with the size (sync or async).
        unit: What one work item is, per second: ``"events/s"``, ``"messages/s"``.
        size: Work items per measured run (full mode); pick it so one run takes ~0.1-0.5 s.
        quick_size: Size with ``--quick``; a tenth of ``size`` when None.
        sizes: Makes the case a curve: ``run`` is measured at each x value, and the runner
            draws a plot. ``size`` is then unused.
        quick_sizes: Curve x values with ``--quick``; the smaller half of ``sizes`` when empty.
        x_label: Axis label for the x values of a curve.
        plot: Name of the PNG the curve goes into; curves sharing it are drawn together
            (by default, the curves of a module with the same ``x_label``).
        baseline: Name of the raw case doing the same work; the ratio is ours / baseline.
        peers: Names of cases doing the same work with peer libraries; one ratio each.
        setup: Called with the size before each measured run, untimed.
        teardown: Called after each measured run, untimed, even when the run fails.
        warmup: Untimed runs before the measured ones (at the smallest size).
        description: One line for the tables; the function's docstring when declared by `Cases.add`.
    """

    name: str
    run: Body
    unit: str = "events/s"
    size: int = 10_000
    quick_size: int | None = None
    sizes: Sequence[int] = ()
    quick_sizes: Sequence[int] = ()
    x_label: str = "size"
    plot: str | None = None
    baseline: str | None = None
    peers: Sequence[str] = ()
    setup: Hook | None = None
    teardown: Hook | None = None
    warmup: int = 1
    description: str = ""

    @property
    def is_curve(self) -> bool:
        """True when the case is measured at several x values."""
        return bool(self.sizes)

    def points(self, *, quick: bool) -> tuple[int, ...]:
        """Return the sizes (x values) to measure, full or quick."""
        if self.sizes:
            if not quick:
                return tuple(self.sizes)
            ordered = sorted(self.sizes)
            return tuple(self.quick_sizes) or tuple(ordered[: max(2, (len(ordered) + 1) // 2)])
        if quick:
            return (self.quick_size or max(1, self.size // 10),)
        return (self.size,)


@dataclass
class Cases:
    """A module's list of cases, with a decorator to declare them next to their code."""

    items: list[Case] = field(default_factory=list)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def append(self, case: Case) -> Case:
        """Add a case built by hand; return it."""
        if any(existing.name == case.name for existing in self.items):
            raise ValueError(f"duplicate case name {case.name!r}")
        self.items.append(case)
        return case

    def add(
        self,
        name: str | None = None,
        *,
        unit: str = "events/s",
        size: int = 10_000,
        quick_size: int | None = None,
        sizes: Sequence[int] = (),
        quick_sizes: Sequence[int] = (),
        x_label: str = "size",
        plot: str | None = None,
        baseline: str | None = None,
        peers: Sequence[str] = (),
        setup: Hook | None = None,
        teardown: Hook | None = None,
        warmup: int = 1,
    ) -> Callable[[B], B]:
        """Return a decorator that declares the function as a case (named after it by default)."""

        def declare(run: B) -> B:
            doc = (run.__doc__ or "").strip().splitlines()
            self.append(
                Case(
                    name=name or run.__name__,
                    run=run,
                    unit=unit,
                    size=size,
                    quick_size=quick_size,
                    sizes=sizes,
                    quick_sizes=quick_sizes,
                    x_label=x_label,
                    plot=plot,
                    baseline=baseline,
                    peers=peers,
                    setup=setup,
                    teardown=teardown,
                    warmup=warmup,
                    description=doc[0] if doc else "",
                )
            )
            return run

        return declare


def skip_unless_reachable(host: str, port: int, *, service: str, timeout: float = 1.0) -> None:
    """Raise `Skip` unless a TCP connection to ``host:port`` opens (use in a ``setup``)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise Skip(f"{service} is not reachable on {host}:{port} ({exc})") from exc
