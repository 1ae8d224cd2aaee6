"""The event store conformance suite: what every `EventStore` backend must do, as tests.

An adapter runs it by giving pytest a ``harness`` fixture and subclassing the suite::

    # conftest.py
    import pytest

    pytest.register_assert_rewrite("tidings.testing")


    @pytest.fixture
    async def harness():
        made = MyHarness()  # an EventStoreHarness
        yield made
        await made.aclose()


    # test_my_store.py
    from tidings.testing.conformance.eventstore import EventStoreConformance


    class TestMyStore(EventStoreConformance):
        pass

Every test makes its own store (`EventStoreHarness.make_store`: fresh, empty, isolated) and its
own stream names, so no test sees another's events. Abilities beyond the contract are declared
in `Capabilities`; a test that needs one the backend lacks is skipped, and says so.

The cases are grouped by topic in mixin classes, a module per few topics: `appends`, `reads`
(with the random-workload properties), `subscriptions`, `metadata`, `verify`, and `inputs`
(with durability). `EventStoreConformance`, here, combines them, so an adapter still imports
one name and finds every case through it. `harness` holds what a backend provides (the
harness protocol, `Capabilities`, `MemoryHarness`), and `helpers` what the cases share.
"""

from __future__ import annotations

from tidings.testing.conformance.eventstore.appends import (
    AppendCases,
    AppendManyCases,
    RaceCases,
)
from tidings.testing.conformance.eventstore.harness import (
    Capabilities,
    EventStoreHarness,
    MemoryHarness,
)
from tidings.testing.conformance.eventstore.helpers import make_events, stream_name
from tidings.testing.conformance.eventstore.inputs import DurabilityCases, InputCases
from tidings.testing.conformance.eventstore.metadata import MetadataCases
from tidings.testing.conformance.eventstore.reads import (
    PropertyCases,
    ReadAllCases,
    ReadStreamCases,
)
from tidings.testing.conformance.eventstore.subscriptions import SubscribeCases
from tidings.testing.conformance.eventstore.verify import VerifyCases

__all__ = [
    "Capabilities",
    "EventStoreConformance",
    "EventStoreHarness",
    "MemoryHarness",
    "make_events",
    "stream_name",
]


class EventStoreConformance(
    AppendCases,
    AppendManyCases,
    RaceCases,
    ReadStreamCases,
    ReadAllCases,
    SubscribeCases,
    MetadataCases,
    VerifyCases,
    InputCases,
    DurabilityCases,
    PropertyCases,
):
    """Every behaviour an event store must show; subclass it in a test module to run it.

    The subclass's module (or a conftest) provides a ``harness`` fixture yielding an
    `EventStoreHarness`; parametrize that fixture to run the suite over several backends.
    """
