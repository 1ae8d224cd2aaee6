"""The dedup store and inbox conformance suites, per backend (memory, sqlite, postgres, redis)."""

from tidings.testing.conformance.dedup import DedupStoreConformance, InboxConformance


class TestDedupStore(DedupStoreConformance):
    """Every dedup store behaviour, per backend."""


class TestInbox(InboxConformance):
    """Every inbox behaviour, per backend with an inbox (sqlite, postgres)."""
