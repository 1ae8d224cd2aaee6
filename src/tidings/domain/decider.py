"""The functional decider: pure ``decide`` and ``evolve`` functions over an immutable state.

::

    def decide(command: Deposit, state: Account) -> list[MoneyDeposited]:
        if command.cents <= 0:
            raise ValueError("deposit a positive amount")
        return [MoneyDeposited(command.cents)]


    def evolve(state: Account, event: MoneyDeposited) -> Account:
        return Account(balance=state.balance + event.cents)


    account = Decider(decide=decide, evolve=evolve, initial_state=Account(), stream_prefix="acc")

    account.given(MoneyDeposited(5)).when(Deposit(10)).then(MoneyDeposited(10))

A `Repository` built on a decider loads a `Versioned` state, calls ``decide`` and appends what
it returns (`Repository.handle`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Generic, TypeVar

__all__ = ["Decider", "Decision", "Scenario", "Versioned"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")


@dataclass(frozen=True, kw_only=True)
class Decider(Generic[C, S, E]):
    """A decider: what a command means given a state, and how events change the state.

    Attributes:
        decide: ``decide(command, state) -> events``: checks the command against the state and
            returns the events it causes (none is fine); raises to refuse it.
        evolve: ``evolve(state, event) -> state``: the state after one event; never fails.
        initial_state: The state before any event.
        stream_prefix: The stream id prefix: a state with id ``x`` lives in ``f"{prefix}-{x}"``.
        snapshot_version: Schema version of the snapshot state; raise it when the state's shape
            changes, and older snapshots are ignored and rebuilt.
        state_type: The type snapshots decode to (default: the type of ``initial_state``).
    """

    decide: Callable[[C, S], Sequence[E]]
    evolve: Callable[[S, E], S]
    initial_state: S
    stream_prefix: str
    snapshot_version: int = 1
    state_type: object = None

    def fold(self, events: Iterable[E], state: S | None = None) -> S:
        """Return the state after ``events``, from ``state`` (default: the initial state)."""
        start = self.initial_state if state is None else state
        return reduce(self.evolve, events, start)

    def run(self, events: Iterable[E], command: C) -> list[E]:
        """Return the events ``command`` causes after ``events`` (what `Repository` does)."""
        return list(self.decide(command, self.fold(events)))

    def given(self, *events: E) -> Scenario[C, S, E]:
        """Start a test: given these past events (see `Scenario`)."""
        return Scenario(self, list(events))


@dataclass(frozen=True)
class Scenario(Generic[C, S, E]):
    """A test in the given-when-then form: ``decider.given(*past).when(command).then(*new)``."""

    decider: Decider[C, S, E]
    past: list[E]

    def when(self, command: C) -> Decision[E]:
        """Decide ``command`` after the past events; keep the events or the error."""
        try:
            return Decision(self.decider.run(self.past, command))
        except Exception as exc:
            return Decision([], exc)


@dataclass(frozen=True)
class Decision(Generic[E]):
    """The outcome of `Scenario.when`: the new events, or the exception ``decide`` raised."""

    events: list[E]
    error: Exception | None = None

    def then(self, *expected: E) -> None:
        """Assert that the command was accepted and caused exactly ``expected``, in order."""
        if self.error is not None:
            raise AssertionError(f"expected {list(expected)!r}, but decide raised {self.error!r}")
        if self.events != list(expected):
            raise AssertionError(f"expected {list(expected)!r}, got {self.events!r}")

    def raises(self, error: type[Exception]) -> Exception:
        """Assert that the command was refused with ``error``; return the exception."""
        if not isinstance(self.error, error):
            got = repr(self.error) if self.error is not None else f"events {self.events!r}"
            raise AssertionError(f"expected {error.__name__}, got {got}")
        return self.error


@dataclass(slots=True)
class Versioned(Generic[S]):
    """A decider's state as loaded by a `Repository`: the state and the version it is at.

    Attributes:
        id: The id the state was loaded for.
        state: The state after the events up to ``version``.
        version: The version of the last event folded in (0: the stream has no events).
        pending: Events decided but not saved yet (`Repository.handle` saves them at once).
        subjects: The data subjects whose personal data the state may hold (kept by a
            repository with a `Shredder`, to seal snapshots with their keys).
    """

    id: str
    state: S
    version: int = 0
    pending: list[object] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set, repr=False, compare=False)
