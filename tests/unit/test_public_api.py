"""The public surface is small, curated and sorted (an idea from httpx's exported-members test)."""

from __future__ import annotations

import importlib

import pytest

import tidings

MODULES = ["tidings", "tidings.errors", "tidings.events", "tidings.codecs", "tidings.eventstore"]


def _isort_style(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions: the order ruff's RUF022 keeps."""
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_resolvable(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported, key=_isort_style)
    for member in exported:
        assert hasattr(module, member), f"{name}.{member} is in __all__ but missing"


def test_top_level_exports_the_envelope_and_the_root_error() -> None:
    assert {"Event", "EventTypes", "TidingsError"} <= set(tidings.__all__)


def test_every_error_has_a_docstring_and_descends_from_the_root() -> None:
    from tidings import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.TidingsError)
        assert cls.__doc__, f"{name} needs a one-line docstring saying when it is raised"
