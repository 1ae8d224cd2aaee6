"""The read model backends every projection test runs on, as one ``read_model_harness``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest

pytest.register_assert_rewrite("tidings.testing")

from tests.projections.backends import harness  # noqa: E402

BACKENDS: Final = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
async def read_model_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Makes read models of one backend; every one made is closed and removed afterwards."""
    made = harness(request.param, tmp_path)
    yield made
    await made.aclose()
