"""The Redis Streams broker's conformance harness, on a private redis-server.

The shared Redis on 127.0.0.1:6379 keeps nothing on disk, so it cannot show durability, and
other engineers' tests use it, so it must not be restarted. This module starts its OWN
``redis-server`` once per test session (on a free port, bound to 127.0.0.1, with
``appendonly yes`` and ``appendfsync always`` in a temporary directory), used by every broker
of every case; `PrivateRedis.restart` SIGKILLs it and starts it again on the same directory,
which is what the service-restart case needs to prove that an acknowledged write survives.
The server and its directory go when the session ends. Cases keep apart by their unique topic
names.
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
from pathlib import Path
from typing import Final

import pytest

from tidings.messaging.ports import Broker, Capabilities
from tidings.testing.conformance.broker import BrokerHarness, Features

__all__ = ["MARKS", "PrivateRedis", "RedisBrokerHarness", "make_harness", "private_redis"]

SERVER: Final = "redis-server"
MARKS: Final = (pytest.mark.redis,)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """One redis-server process with an fsynced AOF in a directory of its own."""

    def __init__(self, binary: str) -> None:
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="tidings-redis-"))
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        args = [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: see {self.directory}/redis.log")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server (what the AOF must survive) and reap it."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=15)
        self._process = None

    def restart(self, *, down_for: float = 0.3) -> None:
        """SIGKILL the server, wait ``down_for`` seconds, start it on the same directory."""
        self.kill()
        time.sleep(down_for)
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


_server: PrivateRedis | None = None


def private_redis() -> PrivateRedis:
    """Return the session's private server, started on first use (skip without the binary)."""
    global _server
    if _server is None:
        binary = shutil.which(SERVER) or next(
            (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.exists(p)),
            None,
        )
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        server = PrivateRedis(binary)
        server.start()
        atexit.register(server.remove)
        _server = server
    return _server


class RedisBrokerHarness(BrokerHarness):
    """`RedisBroker` on the session's private redis-server; the service restarted is it."""

    name = "redis"
    features = Features(publish_raw=True, reopen=True, cross_process=True, restart_service=True)

    def __init__(self, server: PrivateRedis) -> None:
        self._server = server
        self._brokers: list[Broker] = []

    @property
    def capabilities(self) -> Capabilities:
        """`RedisBroker.capabilities`."""
        from tidings.adapters.redis.broker import RedisBroker

        return RedisBroker.capabilities

    async def make_broker(self) -> Broker:
        """Return a new broker on the private server."""
        from tidings.adapters.redis.broker import RedisBroker

        broker = RedisBroker(self._server.url)
        self._brokers.append(broker)
        return await broker.open()

    async def open_again(self, broker: Broker) -> Broker:
        """Return another broker on the same server."""
        return await self.make_broker()

    async def aclose(self) -> None:
        """Close every broker made (the server and its data go at the end of the session)."""
        for broker in self._brokers:
            with contextlib.suppress(Exception):
                await broker.aclose()

    async def enforce_retention(self, broker: Broker) -> None:
        """Run the broker's retention job."""
        await broker.enforce_retention()  # type: ignore[attr-defined]

    async def publish_raw(self, broker: Broker, topic: str, payload: bytes) -> None:
        """Store the bytes as a stream entry, as they are."""
        await broker.publish_raw(topic, payload)  # type: ignore[attr-defined]

    def worker_url(self, broker: Broker) -> str:
        """The private server's URL."""
        return self._server.url

    async def restart_service(self, broker: Broker) -> Broker:
        """SIGKILL the private redis-server and start it again; the broker reconnects."""
        import asyncio

        await asyncio.to_thread(self._server.restart)
        return broker


def make_harness(tmp_path: Path) -> BrokerHarness:
    """Return the harness (skips when redis-py or redis-server is missing)."""
    pytest.importorskip("redis", exc_type=ModuleNotFoundError)
    return RedisBrokerHarness(private_redis())
