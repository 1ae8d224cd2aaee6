"""tidings: one toolkit for event-driven Python systems."""

from tidings.codecs import EventTypes
from tidings.errors import TidingsError
from tidings.events import Event
from tidings.messaging.router import App

__version__ = "0.1.0"

__all__ = ["App", "Event", "EventTypes", "TidingsError", "__version__"]
