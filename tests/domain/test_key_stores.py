"""The key store conformance suite, per backend (memory, sqlite, postgres)."""

from tidings.testing.conformance.keys import KeyStoreConformance


class TestKeyStore(KeyStoreConformance):
    """Every key store behaviour, per backend."""
