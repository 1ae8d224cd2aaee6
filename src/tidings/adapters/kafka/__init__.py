"""Kafka backend (``kafka://``), built on confluent-kafka; tested against Tansu.

Install with ``pip install 'tidings[kafka]'``. `tidings.adapters.kafka.broker` holds
`KafkaBroker` (the messaging port); the other modules are its parts, each with its design in
its docstring.
"""

from __future__ import annotations

from tidings.adapters.kafka.broker import KafkaBroker
from tidings.adapters.kafka.capabilities import KAFKA_CAPABILITIES

__all__ = ["KAFKA_CAPABILITIES", "KafkaBroker"]
