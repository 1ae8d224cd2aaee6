"""Pub/sub: topics, consumer groups, explicit settlement, and the router that runs handlers.

`open_broker(url)` returns the broker for a URL: ``sqlite:///path`` (the default),
``memory://`` or ``nats://...``.
"""

from __future__ import annotations

from typing import cast

from tidings.messaging.ports import (
    DEAD_LETTER_SUFFIX,
    Broker,
    Capabilities,
    Delivery,
    Operation,
    PublishResult,
    Retention,
    StartFrom,
    Support,
    TopicInfo,
    dead_letter_topic,
    partition_for,
)
from tidings.urls import configured_url, resolve

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "Broker",
    "Capabilities",
    "Delivery",
    "Operation",
    "PublishResult",
    "Retention",
    "StartFrom",
    "Support",
    "TopicInfo",
    "dead_letter_topic",
    "open_broker",
    "partition_for",
]


def open_broker(url: str | None = None) -> Broker:
    """Return an (unopened) broker for a URL; ``TIDINGS_BROKER_URL`` when None.

    Use it as ``async with open_broker(url) as broker:``.
    """
    url = url or configured_url("broker")
    cls = resolve("broker", url)
    return cast(Broker, cls(url))  # type: ignore[call-arg]
