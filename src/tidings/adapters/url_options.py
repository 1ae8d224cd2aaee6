"""Reading a backend's options from its URL's query string, once for every adapter.

``nats://host?publish_timeout=5``, ``redis://host/0?prefix=orders&aof_warning=false``: each
adapter describes its options as a frozen dataclass; `read_options` converts the query values
named like its fields by the field's type (bool, int, float, str), applies the keyword
arguments given in code on top (they win), and returns the other query pairs, which the adapter
either passes on to its driver or refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Final
from urllib.parse import parse_qsl

from tidings.errors import ConfigurationError

__all__ = ["read_options"]

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def read_options(
    options_type: Any,
    query: str,
    overrides: Mapping[str, object],
    *,
    scheme: str,
    pass_unknown: bool = False,
) -> tuple[dict[str, object], list[tuple[str, str]]]:
    """Return the option values of a query (overrides applied) and the pairs that are not options.

    Args:
        options_type: The adapter's options dataclass.
        query: The URL's query string.
        overrides: Keyword arguments given in code; a None value means "not given".
        scheme: The URL scheme, for error messages (``"nats"``).
        pass_unknown: Return unknown pairs (for the driver) instead of refusing them.

    Raises:
        ConfigurationError: a value does not convert, or an unknown option when not passed on.
    """
    kinds = {field.name: str(field.type) for field in fields(options_type)}
    values: dict[str, object] = {}
    others: list[tuple[str, str]] = []
    for name, text in parse_qsl(query, keep_blank_values=True):
        if name in kinds:
            values[name] = _convert(name, kinds[name], text, scheme)
        elif pass_unknown:
            others.append((name, text))
        else:
            raise ConfigurationError(f"unknown {scheme}:// URL option {name!r}")
    values.update((name, value) for name, value in overrides.items() if value is not None)
    return values, others


def _convert(name: str, kind: str, text: str, scheme: str) -> object:
    try:
        if kind.startswith("bool"):
            return _boolean(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("int"):
            return int(text)
    except ValueError as exc:
        raise ConfigurationError(f"{scheme}:// URL option {name}={text!r}: {exc}") from exc
    if not text and "None" in kind:
        return None
    return text


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected true or false")
