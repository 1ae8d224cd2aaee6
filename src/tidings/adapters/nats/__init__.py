"""NATS JetStream backend (``nats://``), built on nats-py.

Install with ``pip install 'tidings[nats]'``. `tidings.adapters.nats.broker` holds `NatsBroker`
(the messaging port); the other modules are its parts, each with its design in its docstring.
"""

from __future__ import annotations

from tidings.adapters.nats.broker import NatsBroker
from tidings.adapters.nats.capabilities import NATS_CAPABILITIES
from tidings.adapters.nats.durability import NatsDurabilityWarning

__all__ = ["NATS_CAPABILITIES", "NatsBroker", "NatsDurabilityWarning"]
