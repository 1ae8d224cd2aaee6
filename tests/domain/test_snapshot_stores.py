"""The snapshot store conformance suite, per backend (memory, sqlite, postgres)."""

from tidings.testing.conformance.snapshots import SnapshotStoreConformance


class TestSnapshotStore(SnapshotStoreConformance):
    """Every snapshot store behaviour, per backend."""
