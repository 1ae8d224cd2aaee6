"""The settings of a `PostgresBroker`, from keyword arguments and from the URL's query string.

``postgresql://user@host:5432/db?schema=app&await_acks=true`` sets the options of the same
names as the keyword arguments (keyword arguments win). Every other query parameter
(``sslmode``, ``application_name``...) is passed on to libpq untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from tidings.adapters.postgres.connection import conninfo_from_url
from tidings.adapters.postgres.sql import check_schema
from tidings.adapters.url_options import read_options
from tidings.errors import ConfigurationError

__all__ = ["PostgresBrokerOptions", "parse_url"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresBrokerOptions:
    """What a `PostgresBroker` can be told besides where the server is.

    Attributes:
        schema: The schema of the ``tidings_broker_*`` tables; created when missing.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
        await_acks: Whether ``ack``, ``nack`` and ``extend`` return only once committed (by
            default they return once queued for the next settlement batch, which starts at
            once; closing waits for every queued settlement).
        poll_interval: Most seconds an idle consumer waits before looking again, in case a
            NOTIFY was lost (while the LISTEN connection reconnects, say).
        connect_timeout: Seconds to wait for a pooled connection before raising.
    """

    schema: str = "public"
    min_size: int = 2
    max_size: int = 10
    await_acks: bool = False
    poll_interval: float = 1.0
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        check_schema(self.schema)
        if not 1 <= self.min_size <= self.max_size:
            raise ConfigurationError(
                f"need 1 <= min_size <= max_size, got {self.min_size}, {self.max_size}"
            )
        if self.poll_interval <= 0 or self.connect_timeout <= 0:
            raise ConfigurationError("poll_interval and connect_timeout must be > 0 seconds")


def parse_url(url: str, overrides: dict[str, object]) -> tuple[str, PostgresBrokerOptions]:
    """Return the libpq conninfo (without tidings' options) and the options of a URL."""
    parts = urlsplit(conninfo_from_url(url))
    values, passed = read_options(
        PostgresBrokerOptions, parts.query, overrides, scheme="postgresql", pass_unknown=True
    )
    conninfo = urlunsplit(parts._replace(query=urlencode(passed)))
    try:
        return conninfo, PostgresBrokerOptions(**values)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigurationError(f"bad PostgresBroker option: {exc}") from exc
