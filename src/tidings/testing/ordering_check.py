"""The judge of the ordering torture test: given what a run collected, list every problem.

Kept apart from the run itself so it can be tested on fabricated evidence: a checker that
cannot fail proves nothing.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from tidings.eventstore.ports import VerifyReport
from tidings.testing.ordering_worker import AppendOutcome

__all__ = ["Evidence", "Logged", "Seen", "check"]

# -- the checks -------------------------------------------------------------------------------

_SHOWN: Final = 3
"""Examples a problem line names before it only counts."""


class Seen(NamedTuple):
    """One event as a subscriber was given it."""

    position: int
    event_id: str


class Logged(NamedTuple):
    """One event as the log holds it."""

    position: int
    stream_id: str
    version: int
    event_id: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything a run collected, for `check` to judge.

    Attributes:
        log: The whole log as ``read_all`` returned it, in its order.
        head: What ``head_position`` returned after the log was read.
        subscribers: Each subscriber's events, in the order it was given them.
        appends: Every append any writer began, with its outcome.
        verify: What ``verify`` reported (None: not run).
    """

    log: Sequence[Logged]
    head: int
    subscribers: Sequence[Sequence[Seen]]
    appends: Sequence[AppendOutcome]
    verify: VerifyReport | None = None


def check(evidence: Evidence) -> list[str]:
    """Return every way the evidence breaks the ordering contract (empty: none).

    Each problem starts with its kind: ``gap``, ``duplicate``, ``reorder``, ``mismatch``,
    ``unknown`` (for the log or a subscriber, named first), ``lost``, ``ack``, ``phantom``,
    ``torn``, ``stranger``, ``stream`` or ``verify``.
    """
    expected = [Seen(e.position, e.event_id) for e in evidence.log]
    problems = check_log(evidence.log, evidence.head)
    for n, seen in enumerate(evidence.subscribers, 1):
        problems += compare_sequence(f"subscriber {n}", expected, seen)
    problems += check_appends(evidence.log, evidence.appends)
    problems += check_streams(evidence.log)
    if evidence.verify is not None and not evidence.verify.ok:
        problems.append(f"verify: {evidence.verify.problem}")
    return problems


def check_log(log: Sequence[Logged], head: int) -> list[str]:
    """The log's positions run 1..N without a hole or a repeat, and N is the head."""
    problems = _order_problems("log", [e.position for e in log])
    repeated = [i for i, count in Counter(e.event_id for e in log).items() if count > 1]
    if repeated:
        problems.append(f"duplicate: log: {_few(repeated)} stored more than once")
    last = log[-1].position if log else 0
    if head != last:
        problems.append(f"mismatch: log: the head is {head}, the last event read is at {last}")
    return problems


def compare_sequence(name: str, expected: Sequence[Seen], seen: Sequence[Seen]) -> list[str]:
    """A subscriber's sequence equals the log's exactly: no gap, repeat, reorder or stranger."""
    if list(seen) == list(expected):
        return []
    problems = _order_problems(name, [s.position for s in seen])
    by_position = {e.position: e.event_id for e in expected}
    wrong = [s.position for s in seen if by_position.get(s.position, s.event_id) != s.event_id]
    if wrong:
        problems.append(f"mismatch: {name}: another event than the log's at {_few(wrong)}")
    known = {e.event_id for e in expected}
    unknown = [s.position for s in seen if s.event_id not in known]
    if unknown:
        problems.append(f"unknown: {name}: events the log does not hold, at {_few(unknown)}")
    given = {s.position for s in seen}
    missing = [e.position for e in expected if e.position not in given]
    if missing and not any(p.startswith(("gap:", "reorder:")) for p in problems):
        problems.append(f"gap: {name}: never given positions {_few(missing)}")
    return problems or [f"mismatch: {name}: differs from the log"]


def _order_problems(name: str, positions: Sequence[int]) -> list[str]:
    """Positions must be 1, 2, 3...: report holes, repeats and steps back."""
    gaps, repeats, backs = [], [], []
    previous = 0
    for position in positions:
        if position > previous + 1:
            gaps.append(f"{previous + 1}..{position - 1}")
        elif position == previous:
            repeats.append(position)
        elif position < previous:
            backs.append(f"{position} after {previous}")
        previous = max(previous, position)
    problems = []
    if gaps:
        problems.append(f"gap: {name}: skipped positions {_few(gaps)}")
    if repeats:
        problems.append(f"duplicate: {name}: repeated positions {_few(repeats)}")
    if backs:
        problems.append(f"reorder: {name}: went back to {_few(backs)}")
    return problems


def check_appends(log: Sequence[Logged], appends: Sequence[AppendOutcome]) -> list[str]:
    """Acknowledged appends are stored whole where the store said; failed ones not at all;
    in-doubt ones whole or not at all; nothing else is in the log."""
    where = {e.event_id: e for e in log}
    kinds: dict[str, list[str]] = defaultdict(list)
    for append in appends:
        found = [where[i] for i in append.ids if i in where]
        for kind in _append_problems(append, found):
            kinds[kind].append(append.name)
    appended = {i for a in appends for i in a.ids}
    strangers = [e.position for e in log if e.event_id not in appended]
    problems = [f"{kind}: {_few(names)}" for kind, names in kinds.items()]
    if strangers:
        problems.append(f"stranger: events no writer appended, at positions {_few(strangers)}")
    return problems


def _append_problems(append: AppendOutcome, found: Sequence[Logged]) -> Iterable[str]:
    if append.status in ("conflict", "rollback"):
        if found:
            yield f"phantom ({append.status} but in the log)"
        return
    if append.status == "acked" and len(found) < len(append.ids):
        yield "lost (acknowledged, not in the log)"
        return
    if 0 < len(found) < len(append.ids):
        yield "torn (only part in the log)"
        return
    if found and not _whole(append, found):
        yield "torn (not consecutive versions in order)"
    elif found and append.status == "acked" and not _as_acked(append, found[-1]):
        yield "ack (the store returned another version or position)"


def _whole(append: AppendOutcome, found: Sequence[Logged]) -> bool:
    first = found[0].version
    return all(
        e.stream_id == append.stream and e.version == first + k for k, e in enumerate(found)
    ) and all(a.position < b.position for a, b in itertools.pairwise(found))


def _as_acked(append: AppendOutcome, last: Logged) -> bool:
    return last.version == append.version and last.position == append.position


def check_streams(log: Sequence[Logged]) -> list[str]:
    """In position order, each stream's versions run 1, 2, 3... with no hole or repeat."""
    next_version: dict[str, int] = defaultdict(lambda: 1)
    broken: dict[str, str] = {}
    for entry in log:
        want = next_version[entry.stream_id]
        if entry.version != want and entry.stream_id not in broken:
            broken[entry.stream_id] = (
                f"{entry.stream_id} has version {entry.version} at position {entry.position}, "
                f"expected {want}"
            )
        next_version[entry.stream_id] = entry.version + 1
    return [f"stream: {_few(list(broken.values()))}"] if broken else []


def _few(items: Sequence[object]) -> str:
    shown = ", ".join(str(item) for item in items[:_SHOWN])
    more = len(items) - _SHOWN
    return shown if more <= 0 else f"{shown} and {more} more"
