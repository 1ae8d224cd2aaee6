"""Aggregate classes: recording, handlers, snapshot state."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from tidings.domain import Aggregate, UnhandledEventError, when

from .bank import Account, AccountOpened, Deposit, MoneyDeposited, Open, Refused


@dataclass(frozen=True)
class Priced:
    amount: Decimal


@dataclass(frozen=True)
class Unknown:
    pass


class Till(Aggregate):
    total: Decimal
    prices: tuple[Decimal, ...]

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.total = Decimal(0)
        self.prices = ()
        self._cache = "not state"

    @when(Priced)
    def _priced(self, event: Priced) -> None:
        self.total += event.amount
        self.prices += (event.amount,)


class SpecialTill(Till):
    @when(Priced)
    def _priced_twice(self, event: Priced) -> None:
        self.total += 2 * event.amount


def test_record_applies_the_payload_and_keeps_it_pending() -> None:
    till = Till("t-1")
    till.record(Priced(Decimal("1.50")))
    assert (till.total, till.version, till.pending) == (
        Decimal("1.50"),
        1,
        [Priced(Decimal("1.50"))],
    )


def test_apply_changes_state_without_recording() -> None:
    till = Till("t-1")
    till.apply(Priced(Decimal(2)))
    assert (till.total, till.version, till.pending) == (Decimal(2), 0, [])


def test_payload_without_handler_raises_unhandled_event_error() -> None:
    with pytest.raises(UnhandledEventError, match=r"Till has no @when\(Unknown\)") as caught:
        Till("t-1").record(Unknown())
    assert (caught.value.aggregate, caught.value.payload_type) == (Till, Unknown)


def test_subclass_inherits_and_overrides_handlers() -> None:
    till = SpecialTill("t-1")
    till.record(Priced(Decimal(1)))
    assert till.total == Decimal(2)


def test_second_handler_for_one_payload_type_raises_type_error() -> None:
    with pytest.raises(TypeError, match="second @when"):

        class Twice(Aggregate):
            @when(Priced)
            def _one(self, event: Priced) -> None: ...

            @when(Priced)
            def _two(self, event: Priced) -> None: ...


def test_stream_prefix_defaults_to_lower_case_class_name() -> None:
    assert (Till.stream_prefix, Account.stream_prefix) == ("till", "account")


def test_to_snapshot_holds_public_state_only() -> None:
    till = Till("t-1")
    till.record(Priced(Decimal("0.10")))
    assert till.to_snapshot() == {"total": "0.10", "prices": ("0.10",)}


def test_from_snapshot_restores_annotated_types_and_version() -> None:
    till = Till("t-1")
    till.record(Priced(Decimal("0.10")))
    again = Till.from_snapshot("t-1", 1, till.to_snapshot())
    assert (again.total, again.prices, again.version) == (Decimal("0.10"), (Decimal("0.10"),), 1)


def test_command_that_breaks_an_invariant_records_nothing() -> None:
    account = Account("a-1")
    with pytest.raises(Refused):
        account.handle(Deposit(5))
    assert account.pending == []


def test_command_sees_events_recorded_earlier_in_the_same_command() -> None:
    account = Account("a-1")
    account.handle(Open("ada"))
    account.handle(Deposit(5))
    assert account.pending == [AccountOpened("ada"), MoneyDeposited(5)]


def test_repr_names_class_id_and_version() -> None:
    assert repr(Till("t-1")) == "Till(id='t-1', version=0)"
