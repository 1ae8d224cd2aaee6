"""The settings of a `RedisBroker`, from keyword arguments and from the URL's query string.

``redis://host:6379/0?prefix=orders&aof_warning=false`` sets the same options as the keyword
arguments of the same names (keyword arguments win). Every other query option is redis-py's
(``socket_timeout``, ``health_check_interval``...) and is passed to it as it is, with the
credentials, host, port and database of the URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode, urlsplit, urlunsplit

from tidings.adapters.url_options import read_options
from tidings.errors import ConfigurationError

__all__ = ["RedisOptions", "parse_url"]

_PREFIX: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisOptions:
    """What a `RedisBroker` can be told besides where the server is.

    Attributes:
        prefix: Prepended to every key and channel of the broker (``<prefix>:t:<topic>:<p>``).
        aof_warning: Warn once on open when the server does not append every write to its
            AOF (``appendonly no``): a restart then loses acknowledged events and progress.
        await_acks: Whether ``ack()`` returns only once Redis applied it. By default it returns
            once queued for the next batch (see `tidings.adapters.redis.broker_acks`).
        retention_interval: Seconds between runs of the retention job while the broker is open.
        connect_timeout: Seconds to wait for the first connection.
    """

    prefix: str = "tidings"
    aof_warning: bool = True
    await_acks: bool = False
    retention_interval: float = 60.0
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise ConfigurationError(f"prefix must be 1-64 of A-Z a-z 0-9 . _ -: {self.prefix!r}")
        if self.retention_interval <= 0:
            raise ConfigurationError("retention_interval must be > 0 seconds")
        if self.connect_timeout <= 0:
            raise ConfigurationError("connect_timeout must be > 0 seconds")


def parse_url(url: str, overrides: dict[str, object]) -> tuple[str, RedisOptions]:
    """Return the URL for redis-py (tidings' options removed) and the broker's options."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"{url!r} is not a redis:// URL")
    ours, theirs = read_options(
        RedisOptions, parts.query, overrides, scheme="redis", pass_unknown=True
    )
    driver_url = urlunsplit(parts._replace(query=urlencode(theirs), fragment=""))
    return driver_url, RedisOptions(**ours)  # type: ignore[arg-type]
