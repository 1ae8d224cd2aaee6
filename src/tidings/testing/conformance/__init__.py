"""Conformance suites: one set of behaviours that every backend of a port must show.

A backend proves itself by subclassing a suite class in one of its test modules and providing a
``harness`` fixture; the harness makes fresh, isolated instances and declares, in a capabilities
record, the abilities the backend has beyond the contract (tests that need a missing one are
skipped and say why). tidings runs the same suites against its own memory, SQLite and PostgreSQL
backends.

- `tidings.testing.conformance.eventstore`: `EventStoreConformance`, `EventStoreHarness`.

Call ``pytest.register_assert_rewrite("tidings.testing")`` in your ``conftest.py`` before
importing a suite, so that failing assertions show the values compared.
"""
