"""One SQLite connection owned by one thread, driven from asyncio.

sqlite3 blocks, so each connection lives on its own thread and coroutines hand it work with
`SQLiteThread.run`. Driver errors are translated here, once, into tidings errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, Literal, TypeVar
from urllib.parse import urlsplit

from tidings.errors import BackendError, BackendUnavailableError, ConfigurationError

__all__ = ["SQLiteThread", "Synchronous", "path_from_url", "translate_errors"]

T = TypeVar("T")
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_BACKEND: Final = "sqlite"


def path_from_url(url: str) -> Path:
    """Return the file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("sqlite", "sqlite3"):
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    if parts.netloc:
        raise ConfigurationError(
            f"{url!r}: a sqlite URL has no host; use sqlite:///relative.db or sqlite:////abs.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigurationError(f"{url!r} names no database file")
    return Path(path)


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise sqlite3 errors as tidings errors, with the driver's error as the cause."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "unable to open" in str(exc):
            raise BackendUnavailableError(f"{action}: {exc}", backend=_BACKEND) from exc
        raise BackendError(f"{action}: {exc}", backend=_BACKEND) from exc
    except sqlite3.Error as exc:
        raise BackendError(f"{action}: {exc}", backend=_BACKEND) from exc


class SQLiteThread:
    """A sqlite3 connection and the one thread allowed to use it."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "FULL",
        read_only: bool = False,
        name: str = "tidings-sqlite",
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._read_only = read_only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    async def start(self) -> None:
        """Open the connection on the thread, in WAL mode with the chosen durability."""
        await self.run(self._connect)

    def _connect(self, _: sqlite3.Connection | None) -> None:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        if self._read_only:
            conn.execute("PRAGMA query_only=ON")
        self._conn = conn

    async def run(self, work: Callable[[sqlite3.Connection], T], action: str = "query") -> T:
        """Run ``work(connection)`` on the connection's thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work, action)

    def _call(self, work: Callable[[sqlite3.Connection], T], action: str) -> T:
        with translate_errors(action):
            return work(self._conn)  # type: ignore[arg-type]

    async def close(self) -> None:
        """Close the connection and stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=True)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
