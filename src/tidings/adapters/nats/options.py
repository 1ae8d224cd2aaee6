"""The settings of a `NatsBroker`, from keyword arguments and from the URL's query string.

``nats://host:4222[,host2:4222]?lease_ttl=5&fsync_ack_warning=false`` sets the same options as
the keyword arguments of the same names; keyword arguments win. Credentials in the URL
(``nats://user:password@host``) are passed to nats-py as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tidings.adapters.url_options import read_options
from tidings.errors import ConfigurationError

__all__ = ["NatsOptions", "parse_url"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsOptions:
    """What a `NatsBroker` can be told besides where the server is.

    Attributes:
        fsync_ack_warning: Warn (once per broker) that the server acknowledges writes before
            they reach the disk; see `tidings.adapters.nats.durability`.
        lease_ttl: Seconds a group member holds a partition without renewing its lease; the
            time after which a crashed member's partitions move to the others. Each member
            renews every third of it.
        duplicate_window: Seconds JetStream remembers event ids to drop duplicate publishes.
        max_deliver: When set, a delivery whose attempt would exceed it is moved to the
            dead-letter topic by the broker instead of being handed out.
        publish_timeout: Seconds a publish may take, retries during a reconnect included.
        monitor_url: The server's HTTP monitoring endpoint (``http://host:8222``), read to
            tell whether the server syncs every write; None to not ask.
        connect_timeout: Seconds to wait for the first connection.
    """

    fsync_ack_warning: bool = True
    lease_ttl: float = 5.0
    duplicate_window: float = 120.0
    max_deliver: int | None = None
    publish_timeout: float = 30.0
    monitor_url: str | None = None
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.lease_ttl < 0.5:
            raise ConfigurationError(f"lease_ttl must be >= 0.5 seconds, got {self.lease_ttl}")
        if self.duplicate_window <= 0:
            raise ConfigurationError("duplicate_window must be > 0 seconds")
        if self.max_deliver is not None and self.max_deliver < 1:
            raise ConfigurationError(f"max_deliver must be >= 1, got {self.max_deliver}")


def parse_url(url: str, overrides: dict[str, object]) -> tuple[list[str], NatsOptions]:
    """Return the server URLs for nats-py and the options of a ``nats://`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("nats", "tls"):
        raise ConfigurationError(f"{url!r} is not a nats:// URL")
    hosts = parts.netloc or "127.0.0.1:4222"
    userinfo, _, hostlist = hosts.rpartition("@")
    prefix = f"{userinfo}@" if userinfo else ""
    servers = [
        urlunsplit((parts.scheme, prefix + host, "", "", ""))
        for host in hostlist.split(",")
        if host
    ]
    values, _ = read_options(NatsOptions, parts.query, overrides, scheme="nats")
    return servers, NatsOptions(**values)  # type: ignore[arg-type]
