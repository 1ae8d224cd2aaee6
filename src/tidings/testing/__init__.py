"""Helpers for testing code built on tidings, and adapters written for it.

`tidings.testing.conformance` holds the behaviour suites every backend must pass; they need
the ``test`` extra (pytest, pytest-asyncio, hypothesis). Nothing here is imported by tidings
itself.
"""
