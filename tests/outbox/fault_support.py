"""A private nats-server for fault tests, killed and restarted at will (never the shared one)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SERVER = "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateNats:
    """A JetStream server on its own port and store directory."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait (blocking, up to 20 s) until JetStream answers."""
        args = [SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.directory)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not self._ready():
            if time.monotonic() > deadline:
                raise TimeoutError("the private nats-server did not start")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                return b'"jetstream":true' in conn.recv(4096)
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self, down_for: float = 0.5) -> None:
        """SIGKILL the server, wait, start it again on the same port and store."""
        self.kill()
        time.sleep(down_for)
        self.start()


@dataclass(frozen=True)
class Outcome:
    """What the topic holds against what the database committed."""

    committed: set[str]
    events_per_order: dict[str, set[str]]

    @property
    def lost(self) -> set[str]:
        """Committed orders without an event."""
        return self.committed - set(self.events_per_order)

    @property
    def phantom(self) -> set[str]:
        """Events of orders that never committed."""
        return set(self.events_per_order) - self.committed

    @property
    def repeated(self) -> set[str]:
        """Orders with more than one distinct event (after dedup by event id)."""
        return {order for order, ids in self.events_per_order.items() if len(ids) > 1}


async def committed_orders(db: str) -> set[str]:
    """Return the ids of the orders the database holds."""
    url, _, schema = db.partition("#")
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return {row[0] for row in conn.execute("SELECT id FROM orders")}
        finally:
            conn.close()
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as pg:
        cursor = await pg.execute(f'SELECT id FROM "{schema}".orders')
        return {row[0] for row in await cursor.fetchall()}


async def topic_events(nats_url: str, at_least: int) -> dict[str, set[str]]:
    """Return order id -> event ids on ``orders``: a fresh group reads until 2 s pass idle."""
    from tidings.adapters.nats.broker import NatsBroker

    seen: dict[str, set[str]] = {}
    count = 0
    group = f"check-{uuid.uuid4().hex[:8]}"
    async with (
        NatsBroker(nats_url, fsync_ack_warning=False) as broker,
        broker.subscribe("orders", group=group) as stream,
    ):
        iterator = aiter(stream)
        while True:
            patience = 20.0 if count < at_least else 2.0
            try:
                delivery = await asyncio.wait_for(anext(iterator), patience)
            except TimeoutError:
                break
            count += 1
            assert delivery.event.subject is not None
            seen.setdefault(delivery.event.subject, set()).add(delivery.event.id)
            await delivery.ack()
    return seen
