"""Connections to PostgreSQL: URLs, error translation, LISTEN, and shared runs.

`translate_errors` is the one place where psycopg exceptions become tidings errors; every
public method of the PostgreSQL adapters runs its driver calls inside it. `GroupRun` lets many
concurrent callers share one run of a database job (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Final, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from tidings.errors import BackendError, BackendUnavailableError, ConfigurationError

__all__ = [
    "BACKEND",
    "GroupRun",
    "Listener",
    "conninfo_from_url",
    "open_pool",
    "translate_errors",
]

BACKEND: Final = "postgresql"
_SCHEMES: Final = frozenset({"postgresql", "postgres"})
# Connection exceptions (class 08) and the server going away (57P01..57P03).
_GONE: Final = ("08", "57P01", "57P02", "57P03")

logger = logging.getLogger(__name__)

T = TypeVar("T")


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


class GroupRun(Generic[T]):
    """Shares runs of one async job among concurrent callers.

    `run` returns the result of a run that *started after it was called*; callers that arrive
    while a run is in progress share the next one. A job that sees everything committed before
    it started (the sequencer) thus serves every caller that committed before calling `run`,
    and N concurrent callers cost about two runs instead of N.
    """

    def __init__(self, job: Callable[[], Awaitable[T]]) -> None:
        self._job = job
        self._next: asyncio.Future[T] | None = None
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> T:
        """Wait for a run that starts after this call and return its result."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieve)
        future = self._next
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="tidings-group-run")
        return await asyncio.shield(future)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Let the run in progress finish (cancel it after ``timeout`` seconds); idempotent."""
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        try:
            while (future := self._next) is not None:
                self._next = None
                try:
                    result = await self._job()
                except asyncio.CancelledError:
                    future.cancel()
                    raise
                except Exception as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        finally:
            self._task = None


def _retrieve(future: asyncio.Future[T]) -> None:
    # Every waiter may have been cancelled; never leave an exception "never retrieved".
    if not future.cancelled():
        future.exception()


PoolConn = psycopg.AsyncConnection[TupleRow]


async def open_pool(
    conninfo: str,
    *,
    sizes: tuple[int, int],
    name: str,
    timeout: float,
    setup: Callable[[PoolConn], Awaitable[None]],
    configure: Callable[[PoolConn], Awaitable[None]] | None = None,
) -> AsyncConnectionPool[PoolConn]:
    """Open an autocommit pool, run ``setup`` (create tables) on one connection, return it.

    The pool is closed again if opening or setup fails, and psycopg errors are translated.
    """
    pool: AsyncConnectionPool[PoolConn] = AsyncConnectionPool(
        conninfo,
        min_size=sizes[0],
        max_size=sizes[1],
        kwargs={"autocommit": True},
        configure=configure,
        open=False,
        name=name,
    )
    try:
        with translate_errors():
            await pool.open(wait=True, timeout=timeout)
            async with pool.connection() as conn:
                await setup(conn)
    except BaseException:
        await pool.close()
        raise
    return pool
