"""``tidings worker``: loading an app by name, and a real process stopped by SIGTERM mid-stream."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tidings import App, EventTypes
from tidings.errors import ConfigurationError
from tidings.messaging.handlers import Context
from tidings.messaging.router import connected
from tidings.messaging.worker import load_app
from tidings.testing.faults import Worker, read_lines

ROOT: Final = Path(__file__).resolve().parents[2]
_MAIN: Final = "from tidings.cli import main; main()"
TOPIC: Final = "worker-steps"
KEYS: Final = 8
PER_KEY: Final = 40

types = EventTypes()


@types.register("step.done")
@dataclass(frozen=True)
class Step:
    key: str
    seq: int


def make_app() -> App:
    """The app the worker process runs: it journals each step it handles, one line each."""
    journal = Path(os.environ["WORKER_TEST_JOURNAL"])
    app = App(os.environ["WORKER_TEST_URL"], group="journal", types=types, concurrency=8)

    @app.handler(TOPIC)
    async def handle(step: Step, ctx: Context) -> None:
        line = f"{step.key} {step.seq} {ctx.event.id}\n".encode()
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        await asyncio.sleep(0.02)  # the effect is done, the ack is not: a stop must wait

    return app


not_an_app = 42


def test_load_app_takes_an_app_or_a_function_returning_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WORKER_TEST_JOURNAL", str(tmp_path / "j"))
    monkeypatch.setenv("WORKER_TEST_URL", "memory://")
    app = load_app("tests.messaging.test_worker:make_app")
    assert (app.group, app.topics) == ("journal", [TOPIC])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.messaging.test_worker", "module:attribute"),
        ("tests.messaging.no_such_module:app", "cannot load"),
        ("tests.messaging.test_worker:missing", "cannot load"),
        ("tests.messaging.test_worker:not_an_app", "is a int, not a tidings.App"),
    ],
)
def test_load_app_explains_what_it_cannot_load(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_app(spec)


async def start(url: str, journal: Path, name: str) -> Worker:
    """Start ``tidings worker`` on `make_app` and wait until it is ready."""
    script = Path(sys.executable).parent / "tidings"
    command = [str(script)] if script.exists() else [sys.executable, "-c", _MAIN]
    process = await asyncio.create_subprocess_exec(
        *command,
        "worker",
        "tests.messaging.test_worker:make_app",
        "--drain-timeout",
        "20",
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "WORKER_TEST_URL": url, "WORKER_TEST_JOURNAL": str(journal)},
    )
    worker = Worker(process, name)
    await worker.wait_for(lambda line: line.startswith("ready"), timeout=30)
    return worker


async def stop(worker: Worker) -> int:
    os.kill(worker.pid, signal.SIGTERM)
    try:
        return await worker.wait(timeout=30)
    finally:
        await worker.aclose()


async def until_journal_has(journal: Path, count: int, worker: Worker) -> None:
    """Wait until the journal names ``count`` different steps."""
    for _ in range(3000):
        if len(set(read_lines(journal))) >= count:
            return
        assert worker.returncode is None, worker.stderr
        await asyncio.sleep(0.01)
    raise AssertionError(f"the journal did not reach {count} steps")


async def publish_steps(url: str) -> None:
    async with connected(url) as broker:
        await broker.create_topic(TOPIC, partitions=4)
        for seq in range(PER_KEY):
            steps = [Step(f"k{k}", seq) for k in range(KEYS)]
            for step in steps:
                event = types.to_event(step, source="/test", partitionkey=step.key)
                await broker.publish(TOPIC, [event])


@pytest.mark.slow
async def test_sigterm_mid_stream_drains_and_loses_or_repeats_nothing(tmp_path: Path) -> None:
    url, journal = f"sqlite:///{tmp_path / 'broker.db'}", tmp_path / "journal"
    await publish_steps(url)
    first = await start(url, journal, "worker-1")
    await until_journal_has(journal, KEYS * PER_KEY // 4, first)
    assert await stop(first) == 0, first.stderr
    assert any(line.startswith("stopped:") for line in first.lines), first.lines
    stopped_at = len(read_lines(journal))
    assert stopped_at < KEYS * PER_KEY, "the first worker finished before SIGTERM"

    second = await start(url, journal, "worker-2")
    await until_journal_has(journal, KEYS * PER_KEY, second)
    assert await stop(second) == 0, second.stderr

    lines = read_lines(journal)
    twice = [line for line, seen in Counter(lines).items() if seen > 1]
    assert twice == [], "handled twice"
    handled: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        key, seq, _ = line.decode().split()
        handled[key].append(int(seq))
    assert all(handled[f"k{k}"] == list(range(PER_KEY)) for k in range(KEYS))
