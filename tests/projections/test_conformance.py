"""The checkpoint store conformance suite, per backend (memory, sqlite, postgres, redis)."""

from tidings.testing.conformance.checkpoints import CheckpointStoreConformance


class TestCheckpointStore(CheckpointStoreConformance):
    """Every checkpoint store behaviour, per backend."""
