"""Killing and restarting the local nats-server, for reconnect and durability tests.

The server is the one ``scripts/services`` starts (127.0.0.1:4222, JetStream, store directory
/var/lib/nats-server, which survives the restart). It is found by its command line, killed
with SIGKILL (what JetStream must survive without losing an acknowledged write: the page cache
outlives the process), and started again with the same command as ``scripts/services``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from typing import Final

SERVER: Final = "/usr/sbin/nats-server"
ARGS: Final = ("-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server")
LOG: Final = ("-l", "/var/log/nats-server.log")


def server_pid() -> int | None:
    """Return the pid of the nats-server serving 127.0.0.1:4222, if one runs."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            if argv[0].decode() == SERVER and b"4222" in argv:
                return int(entry)
    return None


def restart_nats_server(*, down_for: float = 0.5, timeout: float = 30.0) -> None:
    """SIGKILL the server, wait ``down_for`` seconds, start it again and wait for JetStream."""
    pid = server_pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not os.path.exists(f"/proc/{pid}"), timeout, "nats-server to exit")
    time.sleep(down_for)
    subprocess.run(
        [
            "start-stop-daemon",
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            SERVER,
            "--",
            *ARGS,
            *LOG,
        ],
        check=True,
    )
    _wait(_jetstream_ready, timeout, "nats-server to answer with JetStream")


def _jetstream_ready() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1) as conn:
            return b'"jetstream":true' in conn.recv(4096)
    except OSError:
        return False


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise TimeoutError(f"waited {timeout}s for {what}")
