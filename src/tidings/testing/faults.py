"""Fault injection: worker processes to kill on purpose, and commits that are slow or fail.

A fault test runs the code under test in a child Python process (`start_worker`), waits until
the child says it is ready, lets it work, kills it with SIGKILL at a moment of its choosing (no
``finally`` block, no ``atexit``, no flush runs: as if the machine lost that process) and then
reads what the child wrote down before dying (`read_lines`).

The child talks back with plain lines on stdout: ``ready`` once it is set up, then whatever
markers the test and the child agree on (`say` writes one, from any thread). The parent keeps
every line in `Worker.lines` and waits for the ones it needs with `Worker.wait_for`.

`CommitFaults` decides from a seed which commits are slow and which fail; a store's
``before_commit`` hook calls it (`CommitFaults.sync_hook` on a writer thread,
`CommitFaults.async_hook` inside an asyncio transaction).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

__all__ = [
    "READY",
    "CommitFaults",
    "InjectedFault",
    "Worker",
    "WorkerExited",
    "is_injected",
    "read_lines",
    "say",
    "start_worker",
]

READY: Final = "ready"
"""The line a worker prints once it is set up and about to start working."""

_STDERR_KEPT: Final = 64 * 1024


class InjectedFault(Exception):
    """Raised by a fault injector on purpose, to roll back the transaction it runs in."""


class WorkerExited(RuntimeError):
    """A worker process ended before printing the line the parent waited for."""


def is_injected(exc: BaseException) -> bool:
    """Return True if ``exc`` is, or was caused by, an `InjectedFault`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, InjectedFault):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def say(line: str) -> None:
    """Write one line to stdout at once, unbuffered; safe from any thread, even mid-kill."""
    os.write(sys.stdout.fileno(), (line + "\n").encode())


class CommitFaults:
    """Seeded decisions, one per commit: sleep a little (a slow commit), raise (a rollback).

    Args:
        seed: Seeds the decisions, so a run can be repeated.
        slow: Share of commits that sleep before committing.
        fail: Share of commits that raise `InjectedFault` (after any sleep).
        max_delay: Longest sleep, in seconds; each slow commit sleeps uniformly up to it.
        on_slow: Called with the chosen delay just before a slow commit sleeps, e.g. to tell
            the parent that now is a good moment to kill this process mid-transaction.

    Attributes:
        commits: How many commits asked so far.
        slowed: How many of them slept.
        failed: How many of them raised.
    """

    def __init__(
        self,
        seed: int | str,
        *,
        slow: float = 0.2,
        fail: float = 0.1,
        max_delay: float = 0.03,
        on_slow: Callable[[float], None] | None = None,
    ) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._rates = (slow, fail, max_delay)
        self._on_slow = on_slow
        self.commits = self.slowed = self.failed = 0

    def decide(self) -> tuple[float, bool]:
        """Return (seconds to sleep, whether to fail) for the next commit, and count it."""
        slow, fail, max_delay = self._rates
        with self._lock:
            delay = self._random.uniform(0, max_delay) if self._random.random() < slow else 0.0
            failing = self._random.random() < fail
            self.commits += 1
            self.slowed += delay > 0
            self.failed += failing
        if delay and self._on_slow is not None:
            self._on_slow(delay)
        return delay, failing

    def sync_hook(self) -> None:
        """A ``before_commit`` hook for a store that calls it on a thread: may sleep or raise."""
        delay, failing = self.decide()
        if delay:
            time.sleep(delay)
        if failing:
            raise InjectedFault("injected fault: rolling back this commit")

    async def async_hook(self) -> None:
        """A ``before_commit`` hook for a store that awaits it: may sleep or raise."""
        delay, failing = self.decide()
        if delay:
            await asyncio.sleep(delay)
        if failing:
            raise InjectedFault("injected fault: rolling back this commit")


class Worker:
    """A child Python process under a fault test's control (made by `start_worker`).

    Attributes:
        name: A label for messages.
        lines: Every line the child printed on stdout so far, without line ends.
        killed: Whether `kill` sent SIGKILL while the child was running.
    """

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.killed = False
        self._process = process
        self._stderr = bytearray()
        self._changed = asyncio.Event()
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the child ended (negative: killed by that signal), else None."""
        return self._process.returncode

    @property
    def stderr(self) -> str:
        """What the child wrote on stderr (the last 64 KiB)."""
        return self._stderr.decode(errors="replace")

    async def wait_for(
        self, match: str | Callable[[str], bool], *, after: int = 0, timeout: float | None = None
    ) -> str:
        """Return the first stdout line from index ``after`` on that matches.

        ``match`` is a line to equal, or a predicate. Pass ``after=len(worker.lines)`` to wait
        for a fresh line only.

        Raises:
            WorkerExited: the child closed stdout (it ended) without printing such a line.
            TimeoutError: no such line within ``timeout`` seconds.
        """
        test = match if callable(match) else match.__eq__
        async with asyncio.timeout(timeout):
            index = after
            while True:
                changed = self._changed
                for line in self.lines[index:]:
                    if test(line):
                        return line
                index = max(index, len(self.lines))
                if self._readers[0].done():
                    raise WorkerExited(f"{self.name} ended without printing such a line")
                await changed.wait()

    def kill(self) -> bool:
        """Send SIGKILL now; return False if the child had already ended."""
        sent = self._sigkill()
        self.killed = self.killed or sent
        return sent

    def _sigkill(self) -> bool:
        if self._process.returncode is not None:
            return False
        try:
            os.kill(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    async def wait(self, timeout: float | None = None) -> int:
        """Wait until the child ends and its output is read; return its exit code."""
        async with asyncio.timeout(timeout):
            code = await self._process.wait()
            await asyncio.gather(*self._readers)
        return code

    async def aclose(self) -> None:
        """Kill the child if it still runs, reap it and finish reading its output; idempotent."""
        self._sigkill()
        await self._process.wait()
        await asyncio.wait(self._readers, timeout=2.0)
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        try:
            async for raw in self._process.stdout:
                self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                self._notify()
        finally:
            self._notify()

    async def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        async for raw in self._process.stderr:
            self._stderr += raw
            del self._stderr[:-_STDERR_KEPT]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


async def start_worker(
    module: str,
    *args: str,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    ready: str | None = READY,
    timeout: float = 60.0,
) -> Worker:
    """Run ``python -m module *args`` and wait until it prints ``ready`` (None: do not wait).

    The child inherits this process's environment (plus ``env``), runs unbuffered and gets no
    stdin. If it does not get ready in ``timeout`` seconds or ends first, it is killed and
    `WorkerExited` (or `TimeoutError`) is raised with its stderr in the message.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    worker = Worker(process, name or f"{module}[{process.pid}]")
    if ready is not None:
        await _wait_ready(worker, ready, timeout)
    return worker


async def _wait_ready(worker: Worker, ready: str, timeout: float) -> None:
    try:
        await worker.wait_for(ready, timeout=timeout)
    except (WorkerExited, TimeoutError) as exc:
        await worker.aclose()
        raise WorkerExited(
            f"{worker.name} did not get ready ({type(exc).__name__}); stderr:\n{worker.stderr}"
        ) from exc


def read_lines(path: Path) -> list[bytes]:
    """Return the complete lines of a file a worker appended to, dropping a torn last line.

    A line cut short by a kill has no line end: it is left out, as the worker never finished
    saying it. A missing file reads as no lines.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    return [line for line in lines[:-1] if line]
