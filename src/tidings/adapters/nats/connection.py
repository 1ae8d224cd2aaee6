"""The connection to NATS: connecting with endless reconnects, and translating driver errors.

`translate_errors` is the one place where nats-py exceptions become tidings errors; every
public method of the NATS adapter runs its driver calls inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from tidings.errors import BackendError, BackendUnavailableError

__all__ = [
    "BACKEND",
    "connect",
    "is_unavailable",
    "translate_errors",
    "wait_event",
    "wrong_last_sequence",
]

BACKEND: Final = "nats"
_WRONG_LAST_SEQUENCE: Final = 10071
_UNAVAILABLE: Final = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
    OSError,
)

log: Final = logging.getLogger("tidings.nats")


async def connect(
    servers: list[str], *, timeout: float, on_reconnect: Callable[[], Awaitable[None]]
) -> Client:
    """Connect, retrying forever after a lost connection (``on_reconnect`` runs after each)."""

    client: Client | None = None

    async def disconnected() -> None:
        if client is not None and not (client.is_closed or client.is_draining):
            log.warning("NATS connection lost; reconnecting")

    async def reconnected() -> None:
        log.info("NATS connection re-established")
        await on_reconnect()

    async def error(exc: Exception) -> None:
        # Refused connections while reconnecting are expected; the disconnect was logged.
        log.log(logging.DEBUG if isinstance(exc, OSError) else logging.WARNING, "NATS: %s", exc)

    with translate_errors("connect"):
        client = await nats.connect(
            servers,
            connect_timeout=timeout,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            allow_reconnect=True,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
        )
    return client


async def wait_event(event: asyncio.Event, timeout: float | None) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds pass (None: no limit).

    Unlike ``asyncio.wait_for`` on Python 3.11, a cancellation that arrives just as the event
    is set is never swallowed.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def is_unavailable(exc: BaseException) -> bool:
    """Return True when an error means the server is (for now) out of reach."""
    return isinstance(exc, _UNAVAILABLE)


def wrong_last_sequence(exc: BaseException) -> bool:
    """Return True for the error of a publish whose expected last sequence did not match."""
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == _WRONG_LAST_SEQUENCE


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise nats-py errors as `BackendError` (`BackendUnavailableError` when unreachable)."""
    try:
        yield
    except nats.errors.Error as exc:
        raise _translated(action, exc) from exc
    except (TimeoutError, OSError) as exc:
        raise BackendUnavailableError(f"{action}: {exc!r}", backend=BACKEND) from exc


def _translated(action: str, exc: nats.errors.Error) -> BackendError:
    message = f"{action}: {str(exc).strip() or type(exc).__name__}"
    if is_unavailable(exc):
        return BackendUnavailableError(message, backend=BACKEND)
    return BackendError(message, backend=BACKEND)
