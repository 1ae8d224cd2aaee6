"""One writer process of the ordering torture test (`tidings.testing.ordering`).

Run as::

    python -m tidings.testing.ordering_worker --url URL [--schema S] --worker-id N \\
        --tasks T (--appends A | --seconds S) --out FILE --seed SEED

It opens the store, makes its commits misbehave (`CommitFaults`: about 20% sleep up to 30 ms
before COMMIT, about 10% raise and roll back), prints ``ready``, then runs T tasks at once, each
appending 1 to 3 events to a random stream of a small shared set, A times or until S seconds
have passed. Most appends expect ANY version; some read the stream's version just before and
expect exactly that, so they race and some conflict.

The journal (``--out``) says what happened, one JSON line per fact, written with one
unbuffered ``write`` each so a SIGKILL never leaves half a fact behind (a torn last line is
dropped by the reader): a `Begun` line before each append, then an `Acked` line once it
returned or a `Failed` line once it raised. An append with a `Begun` line and nothing after it
was in flight when the process died: its events may or may not be in the log, but never only
some of them.

On stdout the worker prints ``ready``, ``in-commit <acked> <delay_ms>`` each time a commit
starts sleeping (the parent's cue to kill it mid-transaction) and ``done <acked>`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, cast

import msgspec

from tidings.errors import ConcurrencyConflict, ConfigurationError
from tidings.events import Event
from tidings.eventstore.base import StoreBase
from tidings.eventstore.ports import ANY, ExpectedVersion
from tidings.testing.faults import READY, CommitFaults, is_injected, read_lines, say
from tidings.urls import resolve, scheme_of

__all__ = [
    "EVENT_TYPE",
    "STREAM_PREFIX",
    "Acked",
    "AppendOutcome",
    "Begun",
    "Failed",
    "JournalLine",
    "Plan",
    "main",
    "open_store",
    "outcomes",
    "read_journal",
    "run",
]

EVENT_TYPE: Final = "torture.appended"
STREAM_PREFIX: Final = "torture-"
_SOURCE: Final = "/tidings/testing/ordering"
_ASYNC_HOOKS: Final = frozenset({"postgresql"})
"""Schemes whose store awaits ``before_commit`` (the others call it on a writer thread)."""


class _Line(msgspec.Struct, frozen=True, tag_field="op"):
    """What every journal line names: the append (worker, task, seq), its stream and events."""

    worker: int
    task: int
    seq: int
    stream: str
    ids: tuple[str, ...]


class Begun(_Line, frozen=True, tag="begin"):
    """An append is about to be sent; ``expected`` is its exact expected version, or None."""

    expected: int | None = None


class Acked(_Line, frozen=True, tag="ok"):
    """The append returned: the store acknowledged these events."""

    version: int
    position: int


class Failed(_Line, frozen=True, tag="failed"):
    """The append raised: ``reason`` is ``conflict``, ``rollback`` (injected) or ``error``."""

    reason: str
    error: str = ""


JournalLine = Begun | Acked | Failed

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(JournalLine)


def read_journal(path: Path) -> list[JournalLine]:
    """Return the lines of a worker's journal (a torn last line left out)."""
    return [_decoder.decode(line) for line in read_lines(path)]


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    """What the journal says about one append.

    Attributes:
        status: ``acked``; ``conflict`` or ``rollback`` (it failed: nothing stored);
            ``error`` (it raised something else: the outcome is unknown); ``in-doubt`` (no
            outcome was written: the process died while the append was in flight).
        version: The stream version the store returned (acked only).
        position: The log position the store returned (acked only).
    """

    worker: int
    task: int
    seq: int
    stream: str
    ids: tuple[str, ...]
    status: str
    version: int | None = None
    position: int | None = None
    error: str = ""

    @property
    def name(self) -> str:
        """The append as people read it: ``writer W task T append S to STREAM``."""
        return f"writer {self.worker} task {self.task} append {self.seq} to {self.stream}"


def outcomes(lines: Sequence[JournalLine]) -> list[AppendOutcome]:
    """Fold a journal into one outcome per append, in the order the appends began."""
    begun: dict[tuple[int, int, int], AppendOutcome] = {}
    for line in lines:
        key = (line.worker, line.task, line.seq)
        names = (line.worker, line.task, line.seq, line.stream, line.ids)
        if isinstance(line, Begun):
            begun[key] = AppendOutcome(*names, status="in-doubt")
        elif isinstance(line, Acked):
            begun[key] = AppendOutcome(*names, "acked", line.version, line.position)
        else:
            begun[key] = AppendOutcome(*names, status=line.reason, error=line.error)
    return list(begun.values())


class _Journal:
    """Appends journal lines to a file, each with one unbuffered write."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.acked = 0

    def write(self, line: JournalLine) -> None:
        os.write(self._fd, _encoder.encode(line) + b"\n")
        self.acked += isinstance(line, Acked)

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one worker does; see the module docstring and ``--help``."""

    url: str
    out: Path
    worker_id: int = 0
    schema: str | None = None
    tasks: int = 8
    appends: int | None = None
    seconds: float | None = None
    seed: int = 0
    streams: int = 8
    exact: float = 0.3
    slow: float = 0.2
    fail: float = 0.1
    max_delay: float = 0.03


def open_store(url: str, schema: str | None = None) -> StoreBase:
    """Return an unopened store for ``url``; ``schema`` is passed on when given (PostgreSQL)."""
    cls = cast(Callable[..., StoreBase], resolve("eventstore", url))
    return cls(url) if schema is None else cls(url, schema=schema)


class _Hooked(Protocol):
    before_commit: Callable[[], object] | None


def _install(store: StoreBase, url: str, faults: CommitFaults) -> None:
    """Point the store's ``before_commit`` fault-injection hook at ``faults``."""
    if not hasattr(store, "before_commit"):
        raise ConfigurationError(f"{type(store).__name__} has no before_commit hook")
    hook = faults.async_hook if scheme_of(url) in _ASYNC_HOOKS else faults.sync_hook
    cast(_Hooked, store).before_commit = hook


async def run(plan: Plan) -> None:
    """Open the store, say ``ready``, run the writer tasks, say ``done``."""
    if plan.appends is None and plan.seconds is None:
        raise ValueError("give appends, seconds or both")
    journal = _Journal(plan.out)
    faults = CommitFaults(
        f"{plan.seed}:{plan.worker_id}:faults",
        slow=plan.slow,
        fail=plan.fail,
        max_delay=plan.max_delay,
        on_slow=lambda delay: say(f"in-commit {journal.acked} {delay * 1000:.1f}"),
    )
    try:
        async with open_store(plan.url, plan.schema) as store:
            _install(store, plan.url, faults)
            say(READY)
            deadline = None if plan.seconds is None else time.monotonic() + plan.seconds
            await asyncio.gather(
                *(_write_task(store, journal, plan, task, deadline) for task in range(plan.tasks))
            )
    finally:
        journal.close()
    say(f"done {journal.acked}")


async def _write_task(
    store: StoreBase, journal: _Journal, plan: Plan, task: int, deadline: float | None
) -> None:
    rng = random.Random(f"{plan.seed}:{plan.worker_id}:{task}")
    seq = 0
    while (plan.appends is None or seq < plan.appends) and (
        deadline is None or time.monotonic() < deadline
    ):
        await _append_once(store, journal, rng, plan, (task, seq))
        seq += 1


async def _append_once(
    store: StoreBase,
    journal: _Journal,
    rng: random.Random,
    plan: Plan,
    key: tuple[int, int],
) -> None:
    """Append 1-3 events to a random stream and journal the attempt and its outcome."""
    stream = f"{STREAM_PREFIX}{rng.randrange(plan.streams)}"
    exact = await _version(store, stream) if rng.random() < plan.exact else None
    events = [_event(plan.worker_id, key, i) for i in range(rng.randint(1, 3))]
    names = (plan.worker_id, *key, stream, tuple(e.id for e in events))
    journal.write(Begun(*names, expected=exact))
    expected: ExpectedVersion = ANY if exact is None else exact
    try:
        result = await store.append(stream, events, expected_version=expected)
    except ConcurrencyConflict as exc:
        journal.write(Failed(*names, reason="conflict", error=str(exc)))
    except Exception as exc:
        reason = "rollback" if is_injected(exc) else "error"
        journal.write(Failed(*names, reason=reason, error=f"{type(exc).__name__}: {exc}"))
    else:
        journal.write(Acked(*names, version=result.version, position=result.position))


async def _version(store: StoreBase, stream: str) -> int:
    last = await store.read_stream(stream, backwards=True, limit=1)
    return last[0].version if last else 0


def _event(worker: int, key: tuple[int, int], index: int) -> Event:
    data = {"worker": worker, "task": key[0], "seq": key[1], "index": index}
    return Event(type=EVENT_TYPE, source=_SOURCE, data=data)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tidings.testing.ordering_worker",
        description="One writer process of the ordering torture test.",
    )
    parser.add_argument("--url", required=True, help="sqlite:///file or postgresql://...")
    parser.add_argument("--schema", help="PostgreSQL schema (default: the store's default)")
    parser.add_argument("--worker-id", type=int, default=0, help="this worker's number")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent writer tasks")
    parser.add_argument("--appends", type=int, help="appends per task (default: no limit)")
    parser.add_argument("--seconds", type=float, help="stop after this long (default: never)")
    parser.add_argument("--out", type=Path, required=True, help="the journal file")
    parser.add_argument("--seed", type=int, default=0, help="seeds every random choice")
    parser.add_argument("--streams", type=int, default=8, help="how many streams to share")
    parser.add_argument("--exact", type=float, default=0.3, help="share of exact appends")
    parser.add_argument("--slow", type=float, default=0.2, help="share of slow commits")
    parser.add_argument("--fail", type=float, default=0.1, help="share of failed commits")
    parser.add_argument("--max-delay", type=float, default=0.03, help="longest slow commit, s")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the worker."""
    args = _parser().parse_args(argv)
    plan = Plan(**vars(args))
    asyncio.run(run(plan))


if __name__ == "__main__":
    main()
