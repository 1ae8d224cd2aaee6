"""The decider: pure functions and the given-when-then helper."""

from __future__ import annotations

import pytest

from .bank import (
    AccountOpened,
    Close,
    Deposit,
    MoneyDeposited,
    MoneyWithdrawn,
    Open,
    Refused,
    State,
    Withdraw,
    ledger,
)

OPENED = AccountOpened("ada")


def test_given_when_then_accepts_the_expected_events() -> None:
    ledger.given(OPENED, MoneyDeposited(10)).when(Withdraw(4)).then(MoneyWithdrawn(4))


def test_then_raises_assertion_error_on_other_events() -> None:
    with pytest.raises(AssertionError, match="expected"):
        ledger.given(OPENED).when(Deposit(3)).then(MoneyDeposited(4))


def test_then_raises_assertion_error_when_decide_refused() -> None:
    with pytest.raises(AssertionError, match="decide raised"):
        ledger.given().when(Deposit(3)).then(MoneyDeposited(3))


def test_raises_returns_the_expected_refusal() -> None:
    error = ledger.given(OPENED).when(Withdraw(1)).raises(Refused)
    assert "balance is 0" in str(error)


def test_raises_fails_when_the_command_was_accepted() -> None:
    with pytest.raises(AssertionError, match="expected Refused"):
        ledger.given(OPENED).when(Close()).raises(Refused)


def test_fold_evolves_from_the_initial_state() -> None:
    assert ledger.fold([OPENED, MoneyDeposited(7)]) == State(True, "ada", None, 7)


def test_run_decides_after_the_given_events() -> None:
    assert ledger.run([], Open("bob")) == [AccountOpened("bob")]
