"""Which class reads which outbox: the relay's URL and source kind -> ``"module:Class"``.

``tidings outbox relay URL BROKER_URL`` picks a source by the URL's scheme and a kind: ``table``
(the outbox table, the default) or another kind registered here (``--source KIND``, or
``?source=KIND`` in the URL, which is removed before the source sees the URL). Every class
takes the URL as its first argument and the options given on the command line (``schema``,
``table``, ``retention``...) as keyword arguments; an option the class does not take is a
`ConfigurationError` naming the ones it does. Nothing is imported until asked for.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Final, cast
from urllib.parse import parse_qsl, urlencode

from tidings.errors import ConfigurationError
from tidings.outbox.ports import OutboxSource
from tidings.urls import EXTRAS, scheme_of

__all__ = ["DEFAULT_KIND", "SOURCES", "open_source", "split_kind"]

DEFAULT_KIND: Final = "table"

SOURCES: Final[dict[tuple[str, str], str]] = {
    ("table", "sqlite"): "tidings.adapters.sqlite.outbox:SQLiteOutboxSource",
    ("table", "postgresql"): "tidings.adapters.postgres.outbox:PostgresOutboxSource",
    ("wal", "postgresql"): "tidings.adapters.postgres.outbox_wal:PostgresWalOutboxSource",
}
"""(kind, scheme) -> ``"module:Class"`` of an `OutboxSource`."""


def split_kind(url: str, kind: str | None = None) -> tuple[str, str]:
    """Return (the URL without a ``source`` query parameter, the kind).

    An explicit ``kind`` wins over the URL's ``?source=``; neither means `DEFAULT_KIND`.
    """
    base, mark, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    named = [value for name, value in pairs if name == "source"]
    if not named:
        return url, kind or DEFAULT_KIND
    rest = urlencode([(name, value) for name, value in pairs if name != "source"])
    stripped = f"{base}{mark}{rest}" if rest else base
    return stripped, kind or named[-1]


def open_source(url: str, kind: str | None = None, **options: object) -> OutboxSource:
    """Return an (unopened) outbox source for a URL and kind.

    Raises:
        ConfigurationError: no source of that kind for the scheme, its driver is missing, or
            it takes no such option.
    """
    url, kind = split_kind(url, kind)
    scheme = scheme_of(url)
    target = SOURCES.get((kind, scheme))
    if target is None:
        known = ", ".join(sorted(f"{s}:// ({k})" for k, s in SOURCES))
        raise ConfigurationError(f"no {kind!r} outbox source for {scheme}:// (known: {known})")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(scheme)
        hint = f": pip install 'tidings[{extra}]'" if extra else ""
        message = f"cannot load the {scheme} outbox{hint} ({exc})"
        raise ConfigurationError(message, extra=extra) from exc
    cls = getattr(module, class_name)
    _check_options(cls, f"the {kind!r} outbox source for {scheme}://", options)
    return cast(OutboxSource, cls(url, **options))


def _check_options(cls: type, what: str, options: dict[str, object]) -> None:
    """Raise `ConfigurationError` naming the options ``cls`` takes no keyword for."""
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    taken = sorted(n for n, p in list(parameters.items())[1:] if p.kind in named)  # not the URL
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise ConfigurationError(
            f"{what} has no option {', '.join(unknown)} (it takes: {', '.join(taken)})"
        )
