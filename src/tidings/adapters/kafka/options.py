"""The settings of a `KafkaBroker`, from keyword arguments and from the URL's query string.

``kafka://host:9092[,host2:9092]?session_timeout=6&linger=0.002`` sets the same options as the
keyword arguments of the same names; keyword arguments win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from tidings.adapters.url_options import read_options
from tidings.errors import ConfigurationError

__all__ = ["KafkaOptions", "parse_url"]

DEFAULT_SERVERS: Final = "127.0.0.1:9092"


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaOptions:
    """What a `KafkaBroker` can be told besides where the brokers are.

    Attributes:
        session_timeout: Seconds a group member may go silent before the coordinator hands its
            partitions to the others (``session.timeout.ms``): how long a crashed member's
            events wait. Tansu also takes about half of it to answer the first JoinGroup.
        linger: Seconds the producer waits to fill a batch (``linger.ms``).
        publish_timeout: Seconds a publish may take, retries through an outage included
            (``message.timeout.ms``).
        dedup_window: Event ids per topic this broker remembers to drop duplicate publishes.
        commit_interval: Seconds between commits of a group's progress (settled offsets are
            committed in the background; leaving the group commits at once).
        request_timeout: Seconds an admin request or a direct read of a partition may take.
        client_id: The Kafka client id.
    """

    session_timeout: float = 10.0
    linger: float = 0.002
    publish_timeout: float = 30.0
    dedup_window: int = 100_000
    commit_interval: float = 0.05
    request_timeout: float = 10.0
    client_id: str = "tidings"

    def __post_init__(self) -> None:
        if self.session_timeout < 1.0:
            raise ConfigurationError(f"session_timeout must be >= 1 s, got {self.session_timeout}")
        if self.linger < 0:
            raise ConfigurationError(f"linger must be >= 0 seconds, got {self.linger}")
        for name in ("publish_timeout", "commit_interval", "request_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.dedup_window < 1:
            raise ConfigurationError(f"dedup_window must be >= 1, got {self.dedup_window}")


def parse_url(url: str, overrides: dict[str, object]) -> tuple[str, KafkaOptions]:
    """Return the bootstrap servers (``host:port,...``) and the options of a ``kafka://`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "kafka":
        raise ConfigurationError(f"{url!r} is not a kafka:// URL")
    if "@" in parts.netloc:
        raise ConfigurationError("kafka:// URLs take no credentials (SASL is not supported yet)")
    servers = parts.netloc or DEFAULT_SERVERS
    values, _ = read_options(KafkaOptions, parts.query, overrides, scheme="kafka")
    return servers, KafkaOptions(**values)  # type: ignore[arg-type]
