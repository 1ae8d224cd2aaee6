"""Which operations each backend proved in this run: the source of the capability table.

Every case that proves an operation is marked with `proves`; when it runs, the outcome is
recorded under the backend's name (the harness's `name`) and the operation. An operation has
passed for a backend when every case proving it passed, and failed when any failed; a case
skipped because the backend does not claim the operation leaves it unproven.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Concatenate, Final, ParamSpec, Protocol, TypeVar

import pytest

from tidings.messaging.ports import Capabilities, Operation

__all__ = ["RESULTS", "Outcome", "Results", "proves"]

P = ParamSpec("P")
R = TypeVar("R")


class Outcome(enum.Enum):
    """How the cases of one operation ended on one backend."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


_RANK: Final = {Outcome.SKIPPED: 0, Outcome.PASSED: 1, Outcome.FAILED: 2}


class Results:
    """Outcomes per backend and operation, merged case by case (failure wins)."""

    def __init__(self) -> None:
        self._outcomes: dict[str, dict[Operation, Outcome]] = {}
        self._claimed: dict[str, Capabilities] = {}

    def record(
        self, backend: str, capabilities: Capabilities, operation: Operation, outcome: Outcome
    ) -> None:
        """Merge one case's outcome into the backend's record of the operation."""
        self._claimed[backend] = capabilities
        outcomes = self._outcomes.setdefault(backend, {})
        known = outcomes.get(operation, Outcome.SKIPPED)
        outcomes[operation] = max(known, outcome, key=_RANK.__getitem__)

    def backends(self) -> list[str]:
        """Return the backends that ran at least one case, in order of first result."""
        return list(self._outcomes)

    def outcomes(self, backend: str) -> Mapping[Operation, Outcome]:
        """Return the outcome per operation of one backend."""
        return dict(self._outcomes.get(backend, {}))

    def proven(self, backend: str) -> Capabilities | None:
        """Return the backend's declared capabilities if every claimed operation passed."""
        claimed = self._claimed.get(backend)
        if claimed is None:
            return None
        outcomes = self._outcomes[backend]
        for operation in Operation:
            if claimed.claims(operation) and outcomes.get(operation) is not Outcome.PASSED:
                return None
        return claimed

    def clear(self) -> None:
        """Forget everything recorded."""
        self._outcomes.clear()
        self._claimed.clear()


RESULTS: Final = Results()
"""The results of this process's run of the suite."""


class _HasHarness(Protocol):
    @property
    def backend_name(self) -> str: ...
    @property
    def backend_capabilities(self) -> Capabilities: ...


S = TypeVar("S", bound=_HasHarness)
Case = Callable[Concatenate[S, P], Awaitable[None]]


def proves(*operations: Operation) -> Callable[[Case[S, P]], Case[S, P]]:
    """Mark a case as proof of operations: skipped unless the backend claims all of them."""

    def decorate(case: Case[S, P]) -> Case[S, P]:
        @functools.wraps(case)
        async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> None:
            backend, claimed = self.backend_name, self.backend_capabilities
            missing = [op for op in operations if not claimed.claims(op)]
            if missing:
                _record(backend, claimed, operations, Outcome.SKIPPED)
                pytest.skip(f"{backend} does not claim {', '.join(op.name for op in missing)}")
            try:
                await case(self, *args, **kwargs)
            except pytest.skip.Exception:
                _record(backend, claimed, operations, Outcome.SKIPPED)
                raise
            except BaseException:
                _record(backend, claimed, operations, Outcome.FAILED)
                raise
            _record(backend, claimed, operations, Outcome.PASSED)

        run.operations = operations  # type: ignore[attr-defined]
        return run

    return decorate


def _record(
    backend: str, claimed: Capabilities, operations: tuple[Operation, ...], outcome: Outcome
) -> None:
    for operation in operations:
        RESULTS.record(backend, claimed, operation, outcome)
