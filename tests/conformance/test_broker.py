"""The broker conformance suite, run against every backend of ``broker_harness.harness``."""

from __future__ import annotations

import pytest
from tests.conformance.broker_harness import (
    DOC,
    capability_table,
    declared_capabilities,
    harness,
)

from tidings.messaging.capabilities import BEGIN, END, render_table, update_section
from tidings.messaging.ports import Capabilities, Operation, Support
from tidings.testing.conformance.broker import BrokerConformance

__all__ = ["capability_table", "harness"]


@pytest.mark.usefixtures("capability_table")
class TestBroker(BrokerConformance):
    """Every broker behaviour, per backend of `broker_harness.HARNESSES`."""


def test_capability_table_in_the_docs_matches_the_declarations() -> None:
    text = DOC.read_text(encoding="utf-8")
    committed = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert committed == render_table(declared_capabilities()).strip()


def test_render_table_lists_every_operation_per_backend_with_notes() -> None:
    native = Capabilities(support=dict.fromkeys(Operation, Support.NATIVE))
    partial = Capabilities(
        support={Operation.FAN_OUT: Support.EMULATED},
        notes={Operation.FAN_OUT: "one stream per group"},
    )
    table = render_table({"a": native, "b": partial}).splitlines()
    assert table[0] == "| Operation | `a` | `b` |"
    assert len([line for line in table if line.startswith("| ")]) == 1 + len(Operation)
    assert "| fan-out to every group | native | emulated¹ |" in table
    assert table[-1] == "¹ `b`, fan-out to every group: one stream per group  "


def test_update_section_replaces_only_the_marked_part() -> None:
    document = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    assert update_section(document, "new\n") == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"
    with pytest.raises(ValueError, match="no"):
        update_section("no markers here", "new\n")
