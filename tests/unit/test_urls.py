"""URLs: scheme normalisation, the scheme -> class table, and configuration from the env."""

from __future__ import annotations

import sys
from collections import OrderedDict

import pytest

from tidings.errors import ConfigurationError
from tidings.urls import BACKENDS, DEFAULT_URL, configured_url, resolve, scheme_of

MISSING_MODULE = "tidings_tests_no_such_driver_module"


@pytest.fixture
def eventstores(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private eventstore row of `BACKENDS`; the real one is put back after the test."""
    row: dict[str, str] = {}
    monkeypatch.setitem(BACKENDS, "eventstore", row)
    return row


@pytest.fixture
def no_url_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("TIDINGS_URL", raising=False)
    monkeypatch.delenv("TIDINGS_EVENTSTORE_URL", raising=False)
    return monkeypatch


# Schemes


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("postgres://db/app", "postgresql"),
        ("postgresql://db/app", "postgresql"),
        ("postgresql+psycopg://db/app", "postgresql"),
        ("POSTGRES://db/app", "postgresql"),
        ("sqlite3:///app.db", "sqlite"),
        ("sqlite:///app.db", "sqlite"),
        ("memory://", "memory"),
        ("nats://localhost:4222", "nats"),
    ],
)
def test_scheme_of_normalises_case_aliases_and_driver_suffix(url: str, scheme: str) -> None:
    assert scheme_of(url) == scheme


@pytest.mark.parametrize("url", ["", "app.db", "/var/lib/app.db"])
def test_scheme_of_rejects_url_without_scheme(url: str) -> None:
    with pytest.raises(ConfigurationError):
        scheme_of(url)


# Resolving


def test_resolve_imports_the_registered_class(eventstores: dict[str, str]) -> None:
    eventstores["memory"] = "collections:OrderedDict"
    assert resolve("eventstore", "memory://") is OrderedDict


def test_resolve_follows_scheme_aliases(eventstores: dict[str, str]) -> None:
    eventstores["postgresql"] = "collections:OrderedDict"
    assert resolve("eventstore", "postgres+psycopg://db/app") is OrderedDict


def test_resolve_unknown_scheme_raises_configuration_error(eventstores: dict[str, str]) -> None:
    eventstores["memory"] = "collections:OrderedDict"
    with pytest.raises(ConfigurationError, match="memory://"):
        resolve("eventstore", "mongodb://db/app")


def test_resolve_unknown_capability_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="teleporter"):
        resolve("teleporter", "memory://")


def test_resolve_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("tidings.adapters.postgres")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # importing it now raises ImportError
    with pytest.raises(ConfigurationError, match=r"tidings\[postgres\]") as caught:
        resolve("eventstore", "postgresql://db/app")
    assert caught.value.extra == "postgres"


def test_resolve_broken_backend_module_is_not_blamed_on_the_driver(
    eventstores: dict[str, str],
) -> None:
    eventstores["postgresql"] = f"{MISSING_MODULE}:PostgresEventStore"
    with pytest.raises(ConfigurationError, match="cannot load") as caught:
        resolve("eventstore", "postgresql://db/app")
    assert caught.value.extra is None


def test_resolve_missing_driver_keeps_the_import_error_as_cause(
    eventstores: dict[str, str],
) -> None:
    eventstores["kafka"] = f"{MISSING_MODULE}:KafkaBroker"
    with pytest.raises(ConfigurationError) as caught:
        resolve("eventstore", "kafka://localhost:9092")
    assert isinstance(caught.value.__cause__, ImportError)


def test_resolve_missing_module_without_extra_raises_configuration_error(
    eventstores: dict[str, str],
) -> None:
    eventstores["memory"] = f"{MISSING_MODULE}:MemoryEventStore"
    with pytest.raises(ConfigurationError) as caught:
        resolve("eventstore", "memory://")
    assert caught.value.extra is None


def test_resolve_missing_class_raises_configuration_error(eventstores: dict[str, str]) -> None:
    eventstores["memory"] = "collections:NoSuchEventStore"
    with pytest.raises(ConfigurationError, match="NoSuchEventStore"):
        resolve("eventstore", "memory://")


def test_resolve_reads_a_capability_added_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "broker", {"memory": "collections:OrderedDict"})
    assert resolve("broker", "memory://") is OrderedDict


# The environment


def test_configured_url_defaults_without_env(no_url_env: pytest.MonkeyPatch) -> None:
    assert configured_url("eventstore") == DEFAULT_URL


def test_configured_url_reads_tidings_url(no_url_env: pytest.MonkeyPatch) -> None:
    no_url_env.setenv("TIDINGS_URL", "memory://")
    assert configured_url("eventstore") == "memory://"


def test_configured_url_prefers_capability_url(no_url_env: pytest.MonkeyPatch) -> None:
    no_url_env.setenv("TIDINGS_URL", "memory://")
    no_url_env.setenv("TIDINGS_EVENTSTORE_URL", "postgresql://db/app")
    assert configured_url("eventstore") == "postgresql://db/app"


def test_configured_url_ignores_other_capability_url(no_url_env: pytest.MonkeyPatch) -> None:
    no_url_env.setenv("TIDINGS_URL", "memory://")
    no_url_env.setenv("TIDINGS_EVENTSTORE_URL", "postgresql://db/app")
    assert configured_url("broker") == "memory://"


def test_configured_url_without_capability_reads_tidings_url(
    no_url_env: pytest.MonkeyPatch,
) -> None:
    no_url_env.setenv("TIDINGS_URL", "memory://")
    assert configured_url() == "memory://"


def test_configured_url_ignores_empty_capability_url(no_url_env: pytest.MonkeyPatch) -> None:
    no_url_env.setenv("TIDINGS_URL", "memory://")
    no_url_env.setenv("TIDINGS_EVENTSTORE_URL", "")
    assert configured_url("eventstore") == "memory://"


def test_configured_url_ignores_empty_tidings_url(no_url_env: pytest.MonkeyPatch) -> None:
    no_url_env.setenv("TIDINGS_URL", "")
    assert configured_url("eventstore") == DEFAULT_URL
