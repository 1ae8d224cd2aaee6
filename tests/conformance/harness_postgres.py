"""The PostgreSQL broker's conformance harness, on a private PostgreSQL cluster.

The suite restarts the service (SIGKILL of the postmaster), which must not happen to the shared
server on :5432, so every broker of this harness runs on a cluster of its own: initialised once
per test session in a temporary directory (as the ``postgres`` user, ``initdb`` refuses root),
listening on 127.0.0.1 on a free port with its socket in that directory, fsync on, and stopped
at exit. Each `make_broker` gets a fresh schema, dropped when the harness closes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Final

import pytest

from tidings.messaging.ports import Broker, Capabilities
from tidings.testing.conformance.broker import BrokerHarness, Features

__all__ = ["MARKS", "PostgresBrokerHarness", "PrivateCluster", "make_harness"]

BIN: Final = Path("/usr/lib/postgresql/15/bin")
MARKS: Final = (pytest.mark.postgres,)


class PrivateCluster:
    """A PostgreSQL 15 cluster of this test session: its own data directory, port and socket."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tidings-pg-broker-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL of the cluster's ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, *, timeout: float = 60.0) -> None:
        """Initialise the cluster (first time only), start it and wait until it accepts.

        The postmaster runs under ``runuser``, a child of this process, which reaps it when it
        is killed (an init that does not reap would leave a zombie holding ``postmaster.pid``).
        """
        if not self.data.exists():
            shutil.chown(self.directory, "postgres", "postgres")
            initdb = (str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
            subprocess.run(_as_postgres(*initdb), check=True, capture_output=True, timeout=120)
        server = (
            *(str(BIN / "postgres"), "-D", str(self.data), "-p", str(self.port)),
            *("-k", str(self.directory), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"),
            *("-c", "max_connections=200"),
        )
        with open(self.directory / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                _as_postgres(*server), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                assert self._process is not None
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the postmaster, then wait for it and its backends to go."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        children = _children(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if self._process is not None:
            self._process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)

    def restart(self, *, down_for: float = 0.5) -> None:
        """Kill the server the hard way and start it again (crash recovery runs)."""
        self.kill()
        time.sleep(down_for)
        self.start()

    def stop(self) -> None:
        """Stop the cluster at once and remove its directory."""
        if self._process is not None and self._process.poll() is None:
            self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None


def _as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


_cluster: PrivateCluster | None = None


def private_cluster() -> PrivateCluster:
    """Return the session's private cluster, starting it on first use (stopped at exit)."""
    global _cluster
    if _cluster is None:
        if os.geteuid() != 0 or not (BIN / "initdb").exists():
            pytest.skip("a private PostgreSQL cluster needs root and PostgreSQL 15's binaries")
        cluster = PrivateCluster()
        atexit.register(cluster.stop)
        cluster.start()
        _cluster = cluster
    return _cluster


class PostgresBrokerHarness(BrokerHarness):
    """`PostgresBroker` in a new schema per broker on the private cluster."""

    name = "postgresql"
    features = Features(publish_raw=True, reopen=True, cross_process=True, restart_service=True)

    def __init__(self, cluster: PrivateCluster) -> None:
        self._cluster = cluster
        self._schemas: dict[Broker, str] = {}

    @property
    def capabilities(self) -> Capabilities:
        """`PostgresBroker.capabilities`."""
        from tidings.adapters.postgres.broker import PostgresBroker

        return PostgresBroker.capabilities

    async def make_broker(self) -> Broker:
        """Return a broker on a new schema."""
        return await self._open(f"b_{uuid.uuid4().hex}")

    async def _open(self, schema: str) -> Broker:
        from tidings.adapters.postgres.broker import PostgresBroker

        broker = PostgresBroker(self._cluster.url, schema=schema)
        self._schemas[broker] = schema
        return await broker.open()

    async def open_again(self, broker: Broker) -> Broker:
        """Return another broker on the same schema."""
        return await self._open(self._schemas[broker])

    async def aclose(self) -> None:
        """Close every broker made and drop their schemas."""
        import psycopg
        from psycopg import sql

        for broker in self._schemas:
            await broker.aclose()
        async with await psycopg.AsyncConnection.connect(self._cluster.url, autocommit=True) as c:
            for schema in set(self._schemas.values()):
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                await c.execute(drop)

    async def enforce_retention(self, broker: Broker) -> None:
        """Run the broker's retention job."""
        await broker.enforce_retention()  # type: ignore[attr-defined]

    async def publish_raw(self, broker: Broker, topic: str, payload: bytes) -> None:
        """Store the bytes as a message row."""
        await broker.publish_raw(topic, payload)  # type: ignore[attr-defined]

    def worker_url(self, broker: Broker) -> str:
        """The cluster's URL with the broker's schema."""
        return f"{self._cluster.url}?schema={self._schemas[broker]}"

    async def restart_service(self, broker: Broker) -> Broker:
        """SIGKILL the private cluster's postmaster and start it again; the broker reconnects."""
        import asyncio

        await asyncio.to_thread(self._cluster.restart)
        return broker


def make_harness(_: Path) -> BrokerHarness:
    """The harness of the conformance run (the private cluster starts on first use)."""
    pytest.importorskip("psycopg", exc_type=ModuleNotFoundError)
    return PostgresBrokerHarness(private_cluster())
