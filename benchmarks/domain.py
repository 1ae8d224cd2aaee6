"""Aggregate rehydration: tidings' repository against the eventsourcing library, same run.

Every case loads one bank account from SQLite: an aggregate whose events are ``Deposited``
``{cents, memo}``, folded into a balance. The figure is events rehydrated per second (a load
counts the whole stream, 1,000 events, whether it starts from a snapshot or not).

- ``rehydrate/*``: a 1,000-event stream, no snapshots: read, decode, fold every event.
- ``snapshot/*``: the same stream with a snapshot every 100 events: the last one is at version
  1,000, so a load reads the snapshot and finds no tail (the best case).
- ``snapshot-tail/*``: the last snapshot is at version 900: a load reads it and folds the
  100-event tail (the worst case of "every 100").
- ``*/raw``: the floor: ``sqlite3`` and msgspec by hand on tidings' own tables (one-pass typed
  decode into a Struct, no envelope object, no checks, no thread hand-off).
- ``*/eventsourcing``: eventsourcing's ``Application`` with ``PERSISTENCE_MODULE=
  eventsourcing.sqlite`` on a temp file; the aggregate uses its ``@event`` decorator,
  ``snapshotting_intervals = {Account: 100}``, no aggregate cache.
- ``curve/*``: loads per second against stream length, 1,000 to 100,000 events: with a snapshot
  every 100 events (the last 100 events after the last snapshot), which must stay flat, and
  without snapshots, for contrast.

The stores are built once per process in a temp folder (untimed) and every library reads the
same stream again and again, so all of them read from a warm page cache.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Final

import msgspec

from benchmarks.api import Case, Cases, Skip
from tidings import EventTypes
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.adapters.sqlite.snapshots import SQLiteSnapshotStore
from tidings.domain import Aggregate, Decider, EveryNEvents, Repository, when

try:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate as ESAggregate
    from eventsourcing.domain import event
except ImportError as exc:  # the module still runs tidings' and the raw cases
    ESAggregate = None  # type: ignore[assignment,misc]
    _ES_MISSING = str(exc)

PACKAGES: Final = ("msgspec", "eventsourcing")
CASES = Cases()

STREAM: Final = 1_000
TAIL: Final = 100
EVERY: Final = 100
LOADS: Final = 20  # loads per measured run of a single-size case
LENGTHS: Final = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
_ID: Final = "acc-1"

types = EventTypes()


@types.register("bank.deposited")
class Deposited(msgspec.Struct, frozen=True):
    cents: int
    memo: str


def deposit(i: int) -> Deposited:
    return Deposited(cents=i % 997, memo="salary" if i % 2 else "refund")


class Account(Aggregate):
    balance: int

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0

    @when(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.cents


@dataclass(frozen=True)
class Balance:
    balance: int = 0


def _evolve(state: Balance, event: object) -> Balance:
    assert isinstance(event, Deposited)
    return replace(state, balance=state.balance + event.cents)


ledger: Decider[object, Balance, object] = Decider(
    decide=lambda command, state: [command],
    evolve=_evolve,
    initial_state=Balance(),
    stream_prefix="account",
)


# -- building the stores, once per process ----------------------------------------------------

_FOLDER = Path(tempfile.mkdtemp(prefix="tidings-bench-domain-"))
atexit.register(shutil.rmtree, _FOLDER, True)
_BUILT: dict[tuple[int, bool, int], Path] = {}


async def _build(length: int, snapshots: bool, tail: int) -> Path:
    """Write a stream of ``length`` deposits; with snapshots, the last is ``tail`` events back."""
    path = _FOLDER / f"tidings-{length}-{int(snapshots)}-{tail}.db"
    async with (
        SQLiteEventStore(path, synchronous="OFF") as store,
        SQLiteSnapshotStore(path) as snaps,
    ):
        plain = Repository(store, types, Account, source="/bank")
        policy = EveryNEvents(EVERY)
        snapshotting = Repository(
            store, types, Account, source="/bank", snapshots=snaps, policy=policy
        )
        covered = length - tail if snapshots else length
        account = Account(_ID)
        await _append(snapshotting if snapshots else plain, account, range(covered))
        await _append(plain, account, range(covered, length))
    return path


async def _append(repo: Repository[Account], account: Account, numbers: range) -> None:
    """Record and save deposits in batches of 1,000 (each save may take a snapshot)."""
    for i in numbers:
        account.record(deposit(i))
        if len(account.pending) == 1_000:
            await repo.save(account)
    await repo.save(account)


async def built(length: int, *, snapshots: bool, tail: int = 0) -> Path:
    """Return the database file with the stream (built on first use)."""
    key = (length, snapshots, tail if snapshots else 0)
    if key not in _BUILT:
        _BUILT[key] = await _build(length, snapshots, tail)
    return _BUILT[key]


# -- tidings ----------------------------------------------------------------------------------


class TidingsLoads:
    """Loads the account with a repository (aggregate class or decider), many times per run.

    With ``length`` the case has one size and counts events (``length`` per load); without, it
    is a curve whose x value is the stream length, and it counts loads.
    """

    def __init__(
        self, model: Any, *, snapshots: bool, tail: int = 0, length: int | None = None
    ) -> None:
        self.model = model
        self.snapshots = snapshots
        self.tail = tail
        self.length = length

    async def setup(self, size: int) -> None:
        self.stream = self.length or size
        if self.length is not None:
            self.loads = LOADS
        else:  # about 20,000 events replayed per run, or 200 loads from a snapshot
            self.loads = 200 if self.snapshots else max(1, 20_000 // self.stream)
        path = await built(self.stream, snapshots=self.snapshots, tail=self.tail)
        self.store = await SQLiteEventStore(path).open()
        self.snaps = await SQLiteSnapshotStore(path).open() if self.snapshots else None
        self.repo = Repository(self.store, types, self.model, source="/bank", snapshots=self.snaps)

    async def run(self, size: int) -> int:
        for _ in range(self.loads):
            loaded = await self.repo.load(_ID)
        assert loaded.version == self.stream
        return self.loads * self.stream if self.length is not None else self.loads

    async def teardown(self) -> None:
        if self.snaps is not None:
            await self.snaps.aclose()
        await self.store.aclose()


def _single(name: str, loads: TidingsLoads, *, baseline: str, peer: str, doc: str) -> None:
    CASES.append(
        Case(
            name=name,
            run=loads.run,
            setup=loads.setup,
            teardown=loads.teardown,
            size=STREAM * LOADS,
            quick_size=STREAM * LOADS,
            baseline=baseline,
            peers=(peer,),
            description=doc,
        )
    )


# -- the raw floor: sqlite3 + msgspec by hand -------------------------------------------------


class RawEnvelope(msgspec.Struct):
    data: Deposited


class RawSnapshot(msgspec.Struct):
    balance: int


_RAW_EVENTS = (
    "SELECT version, envelope FROM tidings_events"
    " WHERE stream_id = ? AND version > ? ORDER BY version"
)
_RAW_SNAPSHOT = (
    "SELECT version, state FROM tidings_snapshots WHERE stream_id = ? ORDER BY version DESC LIMIT 1"
)


class RawLoads:
    """Reads the stream with sqlite3 and folds it, msgspec decoding straight into Structs."""

    def __init__(self, *, snapshots: bool, tail: int = 0) -> None:
        self.snapshots = snapshots
        self.tail = tail
        self.events = msgspec.json.Decoder(RawEnvelope)
        self.state = msgspec.json.Decoder(RawSnapshot)

    def setup(self, size: int) -> None:
        path = asyncio.run(built(STREAM, snapshots=self.snapshots, tail=self.tail))
        self.conn = sqlite3.connect(path)

    def run(self, size: int) -> int:
        for _ in range(LOADS):
            last, balance = self._start()
            for last, envelope in self.conn.execute(_RAW_EVENTS, ("account-" + _ID, last)):  # noqa: B007, B020
                balance += self.events.decode(envelope).data.cents
        assert last == STREAM
        return LOADS * STREAM

    def _start(self) -> tuple[int, int]:
        if not self.snapshots:
            return 0, 0
        version, state = self.conn.execute(_RAW_SNAPSHOT, ("account-" + _ID,)).fetchone()
        return version, self.state.decode(state).balance

    def teardown(self) -> None:
        self.conn.close()


# -- eventsourcing ----------------------------------------------------------------------------

_APPS: dict[tuple[bool, int], tuple[Any, Any]] = {}

if ESAggregate is not None:

    class ESAccount(ESAggregate):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            self.balance = 0

        @event("Deposited")
        def deposit(self, cents: int, memo: str) -> None:
            self.balance += cents

    class Bank(Application):  # type: ignore[misc,valid-type]
        pass

    class SnapshottingBank(Application):  # type: ignore[misc,valid-type]
        snapshotting_intervals: ClassVar[dict[type[Any], int]] = {ESAccount: EVERY}


def _es_env(name: str, snapshots: bool) -> dict[str, str]:
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(_FOLDER / name)}
    if snapshots:  # otherwise every load would look for a snapshot first
        env["IS_SNAPSHOTTING_ENABLED"] = "y"
    return env


def _es_app(snapshots: bool, tail: int) -> tuple[Any, Any]:
    """Return (app, aggregate id) with the stream built: ``STREAM`` events, created included."""
    if ESAggregate is None:
        raise Skip(f"eventsourcing is not installed: {_ES_MISSING}")
    if (snapshots, tail) not in _APPS:
        env = _es_env(f"es-{int(snapshots)}-{tail}.db", snapshots)
        writer = (SnapshottingBank if snapshots else Bank)(env=env)
        account = ESAccount()  # version 1: the Created event
        covered = STREAM - tail if snapshots else STREAM
        for i in range(1, covered):
            account.deposit(**msgspec.structs.asdict(deposit(i)))
        writer.save(account)
        for i in range(covered, STREAM):  # the tail, saved without taking snapshots
            account.deposit(**msgspec.structs.asdict(deposit(i)))
        Bank(env=env).save(account)
        _APPS[(snapshots, tail)] = (Bank(env=env), account.id)
    return _APPS[(snapshots, tail)]


def _es_case(snapshots: bool, tail: int) -> Callable[[int], int]:
    def run(size: int) -> int:
        app, id = _es_app(snapshots, tail)
        for _ in range(LOADS):
            account = app.repository.get(id)
        assert account.version == STREAM
        return LOADS * STREAM

    return run


# -- the cases --------------------------------------------------------------------------------

_SINGLE: Final = (
    ("rehydrate", False, 0, "no snapshots"),
    ("snapshot", True, 0, "snapshot every 100 events, the last at the head"),
    ("snapshot-tail", True, TAIL, "snapshot every 100 events, the last 100 events back"),
)

for prefix, snap, tail, what in _SINGLE:
    raw = RawLoads(snapshots=snap, tail=tail)
    CASES.append(
        Case(
            name=f"{prefix}/raw",
            run=raw.run,
            setup=raw.setup,
            teardown=raw.teardown,
            size=STREAM * LOADS,
            quick_size=STREAM * LOADS,
            description=f"sqlite3 + msgspec by hand, 1,000-event stream, {what}",
        )
    )
    CASES.append(
        Case(
            name=f"{prefix}/eventsourcing",
            run=_es_case(snap, tail),
            setup=lambda size, snap=snap, tail=tail: _es_app(snap, tail),
            size=STREAM * LOADS,
            quick_size=STREAM * LOADS,
            description=f"eventsourcing Application.repository.get, SQLite, {what}",
        )
    )
    for style, model in (("aggregate", Account), ("decider", ledger)):
        _single(
            f"{prefix}/tidings.{style}",
            TidingsLoads(model, snapshots=snap, tail=tail, length=STREAM),
            baseline=f"{prefix}/raw",
            peer=f"{prefix}/eventsourcing",
            doc=f"Repository.load ({style}), SQLite, 1,000-event stream, {what}",
        )

for label, snap in (("snapshot-every-100", True), ("no-snapshots", False)):
    curve = TidingsLoads(Account, snapshots=snap, tail=TAIL)
    CASES.append(
        Case(
            name=f"curve/tidings.{label}",
            run=curve.run,
            setup=curve.setup,
            teardown=curve.teardown,
            unit="loads/s",
            sizes=LENGTHS,
            quick_sizes=LENGTHS[:4],
            x_label="stream length (events)",
            plot="load-by-stream-length",
            description=f"Repository.load against stream length, {label.replace('-', ' ')}",
        )
    )
