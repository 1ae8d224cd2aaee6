"""The domain examples compute what they print (tests/docs runs them as scripts too)."""

from __future__ import annotations

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    module_name = f"example_{name.removesuffix('.py')}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


async def test_upcasting_example_reads_v1_as_v2(tmp_path: Path) -> None:
    example = load("02_upcasting.py")
    old, new = await example.main(tmp_path)
    assert old == example.OrderPlaced("o-1", "u-7", Decimal("12.50"), None, None)
    assert new.discount_code == "SPRING"


async def test_bank_account_example_keeps_balance_and_verifies_after_forget(
    tmp_path: Path,
) -> None:
    example = load("03_bank_account.py")
    assert await example.main(tmp_path) == (750, True)
