"""The ordering torture test: many writers, slow commits, rollbacks and a SIGKILL, then proof
that every subscriber saw exactly what committed, once each, in one dense order.

`torture` runs it against a fresh, isolated target next to the database a URL names (a new
SQLite file in a temporary directory beside it; a new ``torture_<hex>`` schema on PostgreSQL,
dropped afterwards unless ``keep``):

1. ``subscribers`` live subscriptions start in this process, each on its own store, from
   position 0, each recording (position, event id) of every event it is given; every second
   one filters by event type (naming every type written, so it must see everything too).
2. ``writers`` processes (`tidings.testing.ordering_worker`) append concurrently, ``tasks``
   tasks each, to a few shared streams, with injected slow commits and rollbacks and racing
   exact expected versions; each journals what it began and what the store answered.
3. With ``kill``, one writer is SIGKILLed mid-run: after a random part of its work, on the
   next ``in-commit`` cue it prints as a commit starts to sleep for 10 ms or more, so the
   kill lands inside an open transaction (on a timed run, if no cue comes by 80% of the run it
   is killed anyway, between commits; the report says which).
4. When the others are done, a final pass appends one sentinel event (its commit makes every
   store position whatever committed before it), waits until the head has not moved for a
   while (a store may also heal on subscriber polls) and until every subscriber reached it.
5. `check` compares: the log is dense (positions 1..N); every subscriber's sequence equals it
   exactly; every acknowledged event is in it once, where the store said; no event of a failed
   append is; an in-flight append of the killed writer is there whole or not at all; each
   stream's versions run 1..n in position order; and `verify()` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tidings.errors import ConfigurationError
from tidings.events import Event
from tidings.eventstore.base import StoreBase
from tidings.testing.faults import Worker, WorkerExited, start_worker
from tidings.testing.ordering_check import Evidence, Logged, Seen, check
from tidings.testing.ordering_worker import (
    EVENT_TYPE,
    STREAM_PREFIX,
    AppendOutcome,
    open_store,
    outcomes,
    read_journal,
)
from tidings.urls import scheme_of

__all__ = ["Evidence", "Logged", "OrderingReport", "Seen", "check", "torture"]

_WORKER: Final = "tidings.testing.ordering_worker"
_CUE: Final = "in-commit"
_CUE_MIN_MS: Final = 10.0
_KILL_BY: Final = 0.8
"""On a timed run, the victim dies by this share of the run even without a cue."""
_CATCH_UP: Final = 30.0
_SETTLE: Final = 1.0
_SENTINEL: Final = -1
_FINAL_TYPE: Final = "torture.final"
_TYPES: Final = (EVENT_TYPE, _FINAL_TYPE)
"""The worker number of the final pass's sentinel append."""
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class OrderingReport:
    """What a torture run did and what it found.

    Attributes:
        target: The isolated database it ran on (file or schema).
        seed: Seeds every random choice; pass it again to repeat the run's choices.
        writers: Writer processes started.
        subscribers: Live subscriptions compared with the log.
        events: Events in the log at the end.
        appends: Appends the writers began.
        acknowledged: Events of appends that returned.
        failed: Events of appends that raised (conflicts, rollbacks, errors).
        rollbacks: Appends rolled back by an injected fault.
        conflicts: Appends refused for a stale expected version.
        slow_commits: Commits that slept before COMMIT (reported by the writers alive to say).
        killed_worker: The writer that was SIGKILLed, or None.
        killed_in_commit: Whether the kill came on an in-commit cue (inside a transaction).
        in_doubt: Events of the killed writer's appends that were in flight.
        in_doubt_committed: How many of those are in the log.
        duration: Seconds the whole run took, set-up and checks included.
        problems: What is wrong; empty when the store passed.
    """

    target: str
    seed: int
    writers: int
    subscribers: int
    events: int
    appends: int
    acknowledged: int
    failed: int
    rollbacks: int
    conflicts: int
    slow_commits: int
    killed_worker: int | None
    killed_in_commit: bool
    in_doubt: int
    in_doubt_committed: int
    duration: float
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Settings:
    writers: int
    tasks: int
    appends: int | None
    seconds: float | None
    subscribers: int
    kill: bool
    seed: int
    streams: int


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    schema: str | None
    directory: Path
    label: str


async def torture(
    url: str,
    *,
    writers: int = 4,
    tasks: int = 8,
    appends: int | None = None,
    seconds: float | None = 10.0,
    subscribers: int = 3,
    kill: bool = True,
    seed: int | None = None,
    streams: int = 8,
    keep: bool = False,
    progress: Progress | None = None,
) -> OrderingReport:
    """Run the ordering torture test on an isolated target next to ``url``; see the module.

    Args:
        url: ``sqlite:///path/any.db`` (the test's file goes in a new directory beside it) or
            ``postgresql://...`` (the test's tables go in a new schema of that database).
        writers: Writer processes.
        tasks: Concurrent appending tasks per writer.
        appends: Appends per task (None: no limit, stop on ``seconds``).
        seconds: How long the writers append (None: until ``appends`` are done).
        subscribers: Live subscriptions to compare with the log.
        kill: SIGKILL one writer mid-run.
        seed: Seeds every random choice (None: a random seed, shown in the report).
        streams: How many streams the writers share (fewer: more conflicts).
        keep: Keep the target (file or schema) and the journals for a post-mortem.
        progress: Called with a short description of each phase.

    Raises:
        ConfigurationError: the URL's backend cannot be shared by processes (memory://).
    """
    if appends is None and seconds is None:
        raise ValueError("give appends, seconds or both")
    chosen = random.SystemRandom().randrange(2**31) if seed is None else seed
    settings = _Settings(writers, tasks, appends, seconds, subscribers, kill, chosen, streams)
    started = time.monotonic()
    async with _isolated(url, keep=keep) as target:
        run = _Run(settings, target, progress or (lambda _: None))
        return await run.execute(started)


@contextlib.asynccontextmanager
async def _isolated(url: str, *, keep: bool) -> AsyncIterator[_Target]:
    """Yield a fresh target beside ``url``; remove it afterwards unless ``keep``."""
    scheme = scheme_of(url)
    if scheme not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"the ordering torture test needs a store that processes share: sqlite:/// or "
            f"postgresql://, not {scheme}://"
        )
    parent = _sqlite_parent(url) if scheme == "sqlite" else None
    directory = Path(tempfile.mkdtemp(prefix="tidings-torture-", dir=parent))
    if scheme == "sqlite":
        path = directory / "torture.db"
        target = _Target(f"sqlite:///{path}", None, directory, str(path))
    else:
        schema = f"torture_{secrets.token_hex(6)}"
        target = _Target(url, schema, directory, f"schema {schema}")
    try:
        yield target
    finally:
        if not keep:
            if target.schema is not None:
                await _drop_schema(url, target.schema)
            shutil.rmtree(directory, ignore_errors=True)


def _sqlite_parent(url: str) -> Path | None:
    from tidings.adapters.sqlite.connection import path_from_url

    parent = path_from_url(url).absolute().parent
    return parent if parent.is_dir() else None


async def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    from tidings.adapters.postgres.connection import conninfo_from_url

    drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
    async with await psycopg.AsyncConnection.connect(
        conninfo_from_url(url), autocommit=True
    ) as conn:
        await conn.execute(drop)


class _Follower:
    """One live subscription from position 0, on its own store, recording what it is given.

    With ``types`` (every type the test writes, so it must still see everything) it takes
    the store's filtered read path, which moves its position differently.
    """

    def __init__(self, store: StoreBase, types: Sequence[str] | None) -> None:
        self.store = store
        self.seen: list[Seen] = []
        self.task = asyncio.create_task(self._follow(types))

    async def _follow(self, types: Sequence[str] | None) -> None:
        async for record in self.store.subscribe(after_position=0, types=types):
            self.seen.append(Seen(record.position, record.event.id))

    @property
    def position(self) -> int:
        return self.seen[-1].position if self.seen else 0

    async def reach(self, head: int) -> None:
        """Return once the subscription is at ``head``; raise what stopped it early."""
        while self.position < head:
            if self.task.done():
                self.task.result()
                raise RuntimeError("the subscription ended")
            await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        await self.store.aclose()


class _Run:
    """One torture run's state, from the first subscriber to the checked evidence."""

    def __init__(self, settings: _Settings, target: _Target, progress: Progress) -> None:
        self.settings = settings
        self.target = target
        self.progress = progress
        self.random = random.Random(f"{settings.seed}:parent")
        self.workers: list[Worker] = []
        self.followers: list[_Follower] = []
        self.problems: list[str] = []
        self.victim: int | None = None
        self.in_commit = False

    async def execute(self, started: float) -> OrderingReport:
        """Run every phase, always stopping processes and subscriptions; return the report."""
        store = open_store(self.target.url, self.target.schema)
        try:
            await store.open()  # creates the tables before anyone else races to
            await self._start_followers()
            await self._write()
            sentinel = await self._settle(store)
            evidence = await self._gather(store, sentinel)
        finally:
            await self._stop()
            await store.aclose()
        self.progress("checking")
        return self._report(evidence, time.monotonic() - started)

    async def _start_followers(self) -> None:
        self.progress(f"starting {self.settings.subscribers} subscribers")
        for n in range(self.settings.subscribers):
            store = await open_store(self.target.url, self.target.schema).open()
            self.followers.append(_Follower(store, _TYPES if n % 2 else None))

    async def _write(self) -> None:
        s = self.settings
        self.progress(f"starting {s.writers} writers")
        started = await asyncio.gather(
            *(start_worker(_WORKER, *self._args(n), name=f"writer {n}") for n in range(s.writers)),
            return_exceptions=True,
        )
        self.workers = [w for w in started if isinstance(w, Worker)]
        for failure in started:
            if isinstance(failure, BaseException):
                raise failure  # the ones that did start are stopped by `execute`
        self.progress("writing")
        if s.kill and s.writers:
            await self._kill_one()
        self.progress("waiting for the writers")
        budget = 600.0 if s.seconds is None else s.seconds + 120.0
        await asyncio.gather(*(w.wait(timeout=budget) for w in self.workers))

    def _args(self, n: int) -> list[str]:
        s, t = self.settings, self.target
        args = ["--url", t.url, "--worker-id", str(n), "--tasks", str(s.tasks)]
        args += ["--out", str(self._journal(n)), "--seed", str(s.seed), "--streams", str(s.streams)]
        args += [] if t.schema is None else ["--schema", t.schema]
        args += [] if s.appends is None else ["--appends", str(s.appends)]
        return args + ([] if s.seconds is None else ["--seconds", str(s.seconds)])

    def _journal(self, n: int) -> Path:
        return self.target.directory / f"writer-{n}.jsonl"

    async def _kill_one(self) -> None:
        """SIGKILL one writer mid-run, preferably while one of its commits sleeps.

        On time: at 20-50% of the run, on its next cue, or at 80% without one. On appends: on
        its first cue after 20-60% of its appends were acknowledged.
        """
        s = self.settings
        victim = self.random.randrange(s.writers)
        worker = self.workers[victim]
        min_acked, timeout = 0, None
        if s.seconds is not None:
            latest = time.monotonic() + _KILL_BY * s.seconds
            await asyncio.sleep(self.random.uniform(0.2, 0.5) * s.seconds)
            timeout = max(0.0, latest - time.monotonic())
        else:
            assert s.appends is not None
            total = s.tasks * s.appends
            min_acked = self.random.randint(total // 5, total * 3 // 5)
        try:
            await worker.wait_for(
                lambda line: _is_cue(line, min_acked), after=len(worker.lines), timeout=timeout
            )
            self.in_commit = True
        except TimeoutError:
            pass  # no slow commit lately: kill it between commits
        except WorkerExited:
            return  # it finished first; the report shows no kill
        if worker.kill():
            self.victim = victim
            self.progress(f"killed writer {victim}")

    async def _settle(self, store: StoreBase) -> AppendOutcome:
        """Append the sentinel, wait for a still head and for every subscriber to reach it."""
        self.progress("final pass")
        event = Event(type=_FINAL_TYPE, source="/tidings/testing/ordering")
        stream = f"{STREAM_PREFIX}final"
        result = await store.append(stream, [event])
        sentinel = AppendOutcome(
            _SENTINEL, 0, 0, stream, (event.id,), "acked", result.version, result.position
        )
        head = await _still_head(store, max(_SETTLE, 2 * store.poll_interval))
        self.progress("subscribers catching up")
        for n, follower in enumerate(self.followers, 1):
            try:
                await asyncio.wait_for(follower.reach(head), timeout=_CATCH_UP)
            except Exception as exc:
                self.problems.append(
                    f"subscriber {n}: stopped at position {follower.position} of {head}: "
                    f"{type(exc).__name__}: {exc}"
                )
        return sentinel

    async def _gather(self, store: StoreBase, sentinel: AppendOutcome) -> Evidence:
        self.progress("reading the log")
        log = [
            Logged(r.position, r.stream_id, r.version, r.event.id) for r in await store.read_all()
        ]
        appends = [sentinel]
        for n in range(self.settings.writers):
            mine = outcomes(read_journal(self._journal(n)))
            self.problems += _writer_problems(n, self.workers[n], mine, killed=n == self.victim)
            appends += mine
        return Evidence(
            log=log,
            head=await store.head_position(),
            subscribers=[list(f.seen) for f in self.followers],
            appends=appends,
            verify=await store.verify(),
        )

    async def _stop(self) -> None:
        for worker in self.workers:
            await worker.aclose()
        for follower in self.followers:
            await follower.aclose()

    def _report(self, evidence: Evidence, duration: float) -> OrderingReport:
        appends = evidence.appends
        logged = {entry.event_id for entry in evidence.log}
        in_doubt = [i for a in appends if a.status == "in-doubt" for i in a.ids]
        survivors = [w for n, w in enumerate(self.workers) if n != self.victim]
        return OrderingReport(
            target=self.target.label,
            seed=self.settings.seed,
            writers=self.settings.writers,
            subscribers=self.settings.subscribers,
            events=len(evidence.log),
            appends=len(appends) - 1,
            acknowledged=_events(appends, "acked") - 1,
            failed=_events(appends, "conflict", "rollback", "error"),
            rollbacks=sum(a.status == "rollback" for a in appends),
            conflicts=sum(a.status == "conflict" for a in appends),
            slow_commits=sum(_is_cue(line, 0, 0.0) for w in survivors for line in w.lines),
            killed_worker=self.victim,
            killed_in_commit=self.victim is not None and self.in_commit,
            in_doubt=len(in_doubt),
            in_doubt_committed=sum(i in logged for i in in_doubt),
            duration=duration,
            problems=(*self.problems, *check(evidence)),
        )


def _is_cue(line: str, min_acked: int, min_ms: float = _CUE_MIN_MS) -> bool:
    """Whether ``line`` is ``in-commit <acked> <delay_ms>`` with at least these numbers."""
    parts = line.split()
    if len(parts) != 3 or parts[0] != _CUE:
        return False
    return int(parts[1]) >= min_acked and float(parts[2]) >= min_ms


async def _still_head(store: StoreBase, quiet: float) -> int:
    """Return the head once it has not moved for ``quiet`` seconds."""
    head = await store.head_position()
    since = time.monotonic()
    while time.monotonic() - since < quiet:
        await asyncio.sleep(0.1)
        now = await store.head_position()
        if now != head:
            head, since = now, time.monotonic()
    return head


def _events(appends: Sequence[AppendOutcome], *statuses: str) -> int:
    return sum(len(a.ids) for a in appends if a.status in statuses)


def _writer_problems(
    n: int, worker: Worker, appends: Sequence[AppendOutcome], *, killed: bool
) -> list[str]:
    """What a writer's exit and journal say went wrong, apart from the log's checks."""
    problems = []
    if not killed and worker.returncode != 0:
        tail = worker.stderr.strip().splitlines()[-1:] or ["no stderr"]
        problems.append(f"writer {n}: exited with code {worker.returncode}: {tail[0]}")
    unfinished = [a for a in appends if a.status == "in-doubt"]
    if unfinished and not killed:
        problems.append(f"writer {n}: {len(unfinished)} appends never returned nor raised")
    errors = [a for a in appends if a.status == "error"]
    if errors:
        problems.append(
            f"error: writer {n}: {len(errors)} appends raised unexpectedly, first: "
            f"{errors[0].error}"
        )
    return problems
