"""Which class serves which URL: the only place that knows backend names.

Each capability (``eventstore``, ``broker``...) maps URL schemes to ``"module:Class"`` strings.
Nothing is imported until a URL asks for it, so a missing optional driver only matters to the
user who picks that backend, and then the error says which extra to install.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from tidings.errors import ConfigurationError

__all__ = [
    "BACKENDS",
    "DEFAULT_URL",
    "EXTRAS",
    "Backend",
    "configured_url",
    "resolve",
    "scheme_of",
]

DEFAULT_URL: Final = "sqlite:///tidings.db"

EXTRAS: Final[dict[str, str]] = {
    "postgresql": "postgres",
    "nats": "nats",
    "kafka": "kafka",
    "redis": "redis",
}
"""Scheme -> the extra that installs its driver (memory and sqlite need none)."""

_DRIVERS: Final[dict[str, str]] = {
    "postgresql": "psycopg",
    "nats": "nats",
    "kafka": "confluent_kafka",
    "redis": "redis",
}

BACKENDS: Final[dict[str, dict[str, str]]] = {
    "eventstore": {
        "memory": "tidings.adapters.memory.eventstore:MemoryEventStore",
        "sqlite": "tidings.adapters.sqlite.eventstore:SQLiteEventStore",
        "postgresql": "tidings.adapters.postgres.eventstore:PostgresEventStore",
    },
    "broker": {
        "memory": "tidings.adapters.memory.broker:MemoryBroker",
        "sqlite": "tidings.adapters.sqlite.broker:SQLiteBroker",
        "nats": "tidings.adapters.nats.broker:NatsBroker",
        "postgresql": "tidings.adapters.postgres.broker:PostgresBroker",
        "redis": "tidings.adapters.redis.broker:RedisBroker",
        "kafka": "tidings.adapters.kafka.broker:KafkaBroker",
    },
}
"""Capability -> scheme -> ``"module:Class"``; every class takes the URL as its first argument."""

_ALIASES: Final = {"postgres": "postgresql", "sqlite3": "sqlite"}


@dataclass(frozen=True, slots=True)
class Backend:
    """A resolved URL: the scheme and the class that serves it."""

    scheme: str
    target: str


def scheme_of(url: str) -> str:
    """Return the normalised scheme of a URL (``postgres`` -> ``postgresql``)."""
    scheme = urlsplit(url).scheme.lower().split("+", 1)[0]
    if not scheme:
        raise ConfigurationError(f"{url!r} has no scheme; try 'sqlite:///path' or 'memory://'")
    return _ALIASES.get(scheme, scheme)


def resolve(capability: str, url: str) -> type[object]:
    """Import and return the class serving ``url`` for ``capability``.

    Raises:
        ConfigurationError: the scheme is unknown for this capability, or its driver is not
            installed (the message names the extra, e.g. ``pip install 'tidings[postgres]'``).
    """
    table = BACKENDS.get(capability)
    if table is None:
        raise ConfigurationError(f"unknown capability {capability!r}")
    scheme = scheme_of(url)
    target = table.get(scheme)
    if target is None:
        known = ", ".join(f"{name}://" for name in sorted(table)) or "none yet"
        raise ConfigurationError(
            f"no {capability} backend for {scheme}:// (known: {known})", extra=None
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _missing_driver(scheme, exc) from exc
    cls: type[object] | None = getattr(module, class_name, None)
    if cls is None:
        raise ConfigurationError(f"{module_name} has no {class_name} for {scheme}://")
    return cls


def _missing_driver(scheme: str, exc: ImportError) -> ConfigurationError:
    extra = EXTRAS.get(scheme)
    driver = _DRIVERS.get(scheme)
    missing = (exc.name or "").split(".", 1)[0]
    if extra is None or driver is None or missing != driver:
        return ConfigurationError(f"cannot load the {scheme} backend: {exc}")
    return ConfigurationError(
        f"the {scheme} backend needs {driver}: pip install 'tidings[{extra}]'", extra=extra
    )


def configured_url(capability: str | None = None) -> str:
    """Return the URL from the environment: ``TIDINGS_<CAPABILITY>_URL``, then ``TIDINGS_URL``."""
    if capability is not None:
        specific = os.environ.get(f"TIDINGS_{capability.upper()}_URL")
        if specific:
            return specific
    return os.environ.get("TIDINGS_URL") or DEFAULT_URL
