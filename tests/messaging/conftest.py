"""Fixtures shared by the router and middleware tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tidings.adapters.memory.broker import MemoryBroker


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    """A fresh in-memory broker (same semantics as the durable ones)."""
    async with MemoryBroker() as opened:
        yield opened
