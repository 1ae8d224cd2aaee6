"""The broker conformance suite: what every `Broker` backend must do, as tests.

An adapter runs it by giving pytest a ``harness`` fixture (a `BrokerHarness`) and subclassing
the suite::

    # conftest.py
    import pytest

    pytest.register_assert_rewrite("tidings.testing")


    @pytest.fixture
    async def harness():
        made = MyBrokerHarness()
        yield made
        await made.aclose()


    # test_my_broker.py
    from tidings.testing.conformance.broker import BrokerConformance


    class TestMyBroker(BrokerConformance):
        pass

Every case makes its own broker (`BrokerHarness.make_broker`) and its own topic and group
names, so no case sees another's messages. A case that proves an operation is marked with
`proves`: it runs when the broker's capabilities claim that operation, is skipped (saying why)
when they do not, and its outcome is recorded in `RESULTS`, from which the capability table in
``docs/messaging.md`` is written. What a harness can do beyond the port (reopen storage, run a
worker process, restart the service, publish raw bytes) is declared in `Features`.

The cases are grouped by topic in mixin classes: `publishing`, `groups` (with the per-key
order torture in `ordering`), `settlement`, `replay` (with retention and durability),
`faults` and `transfer` (a topic read out and appended in, for topic migration).
`BrokerConformance`, here, combines them.
"""

from __future__ import annotations

from tidings.testing.conformance.broker.faults import FaultCases
from tidings.testing.conformance.broker.groups import GroupCases
from tidings.testing.conformance.broker.harness import (
    BrokerHarness,
    Features,
    MemoryBrokerHarness,
)
from tidings.testing.conformance.broker.helpers import (
    Consumer,
    group_name,
    make_events,
    topic_name,
)
from tidings.testing.conformance.broker.publishing import PublishCases
from tidings.testing.conformance.broker.replay import (
    DurabilityCases,
    ReplayCases,
    RetentionCases,
)
from tidings.testing.conformance.broker.results import RESULTS, Outcome, Results, proves
from tidings.testing.conformance.broker.settlement import SettleCases
from tidings.testing.conformance.broker.transfer import TransferCases

__all__ = [
    "RESULTS",
    "BrokerConformance",
    "BrokerHarness",
    "Consumer",
    "Features",
    "MemoryBrokerHarness",
    "Outcome",
    "Results",
    "group_name",
    "make_events",
    "proves",
    "topic_name",
]


class BrokerConformance(
    PublishCases,
    GroupCases,
    SettleCases,
    ReplayCases,
    RetentionCases,
    DurabilityCases,
    FaultCases,
    TransferCases,
):
    """Every behaviour a broker must show; subclass it in a test module to run it.

    The subclass's module (or a conftest) provides a ``harness`` fixture yielding a
    `BrokerHarness`; parametrize that fixture to run the suite over several backends.
    """
