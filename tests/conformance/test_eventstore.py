"""The event store conformance suite, run against every backend of ``conftest.harness``."""

from tidings.testing.conformance.eventstore import EventStoreConformance


class TestEventStore(EventStoreConformance):
    """Every event store behaviour, per backend (memory, sqlite, postgres)."""
