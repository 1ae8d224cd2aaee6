"""Connections to PostgreSQL: URLs, error translation, and the LISTEN connection.

`translate_errors` is the one place where psycopg exceptions become tidings errors; every
public method of the PostgreSQL adapters runs its driver calls inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tidings.errors import BackendError, BackendUnavailableError, ConfigurationError

__all__ = ["BACKEND", "Listener", "conninfo_from_url", "translate_errors"]

BACKEND: Final = "postgresql"
_SCHEMES: Final = frozenset({"postgresql", "postgres"})
# Connection exceptions (class 08) and the server going away (57P01..57P03).
_GONE: Final = ("08", "57P01", "57P02", "57P03")

logger = logging.getLogger(__name__)


def conninfo_from_url(url: str) -> str:
    """Return a libpq URI for a ``postgresql://``, ``postgres://`` or ``+psycopg`` URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower().removesuffix("+psycopg")
    if scheme not in _SCHEMES:
        raise ConfigurationError(f"{url!r} is not a postgresql:// URL")
    return urlunsplit(parts._replace(scheme="postgresql"))


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Raise psycopg and pool errors as `BackendError` (or `BackendUnavailableError`)."""
    try:
        yield
    except psycopg.Error as exc:
        raise _translated(exc) from exc


def _translated(exc: psycopg.Error) -> BackendError:
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, psycopg.OperationalError) and _is_unavailable(exc.sqlstate):
        return BackendUnavailableError(message, backend=BACKEND)
    return BackendError(message, backend=BACKEND)


def _is_unavailable(sqlstate: str | None) -> bool:
    # No SQLSTATE: the client could not connect or lost the connection (pool errors too).
    return sqlstate is None or sqlstate.startswith(_GONE)


class Listener:
    """Keeps one LISTEN connection open and calls ``on_notify`` for every notification.

    It reconnects with exponential backoff when the connection drops, and calls
    ``on_notify`` after each (re)connect too, because notifications sent while it was away
    are lost; callers must still poll, as this is only a wake-up.
    """

    min_delay: float = 0.1
    max_delay: float = 5.0

    def __init__(self, conninfo: str, channel: str, on_notify: Callable[[], None]) -> None:
        self._conninfo = conninfo
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(channel)).as_bytes()
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None
        self._delay = self.min_delay

    def start(self) -> None:
        """Start listening in the background (once; later calls do nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tidings-postgres-listen")

    async def aclose(self) -> None:
        """Stop listening and close the connection; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self._listen_once()
            except (psycopg.Error, OSError) as exc:
                logger.warning("LISTEN connection lost (%s); retry in %.1fs", exc, self._delay)
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, self.max_delay)

    async def _listen_once(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        async with conn:
            await conn.execute(self._listen)
            self._delay = self.min_delay
            self._on_notify()
            async for _ in conn.notifies():
                self._on_notify()
