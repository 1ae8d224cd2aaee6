"""confluent-kafka at the boundary: client settings, its futures on asyncio, error translation.

confluent-kafka is synchronous and threaded: its calls block and its callbacks run on the
thread that polls. Nothing here blocks the event loop: admin calls return
`concurrent.futures.Future` objects that `wait` awaits, and anything that would block runs on
a thread of its own (`tidings.adapters.kafka.producing`, `tidings.adapters.kafka.poller`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Iterator
from typing import Final, TypeVar

from confluent_kafka import KafkaError, KafkaException

from tidings.adapters.kafka.options import KafkaOptions
from tidings.errors import BackendError, BackendUnavailableError

__all__ = ["BACKEND", "client_config", "error_from", "translate_errors", "wait"]

BACKEND: Final = "kafka"
_log: Final = logging.getLogger("tidings.adapters.kafka.client")
_UNAVAILABLE: Final = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.REQUEST_TIMED_OUT,
    }
)
T = TypeVar("T")


def client_config(servers: str, options: KafkaOptions, **extra: object) -> dict[str, object]:
    """Return the settings every client of a broker shares, plus ``extra``."""
    config: dict[str, object] = {
        "bootstrap.servers": servers,
        "client.id": options.client_id,
        "logger": _log,
        "socket.connection.setup.timeout.ms": 5000,
        "reconnect.backoff.max.ms": 500,
    }
    config.update(extra)
    return config


def error_from(error: KafkaError | BaseException, action: str) -> BackendError:
    """Return the tidings error for a confluent-kafka error met while doing ``action``."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    if isinstance(error, KafkaError):
        kind = BackendUnavailableError if error.code() in _UNAVAILABLE else BackendError
        return kind(f"{action}: {error.str()}", backend=BACKEND)
    return BackendError(f"{action}: {error}", backend=BACKEND)


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Raise confluent-kafka's exceptions as `BackendError` (the original as ``__cause__``)."""
    try:
        yield
    except KafkaException as exc:
        raise error_from(exc, action) from exc


async def wait(future: concurrent.futures.Future[T], action: str) -> T:
    """Await a confluent-kafka future without blocking the loop; translate its errors."""
    with translate_errors(action):
        return await asyncio.wrap_future(future)
