"""The repository: loads aggregates (or decider states) from their streams and saves new events.

::

    accounts = Repository(store, types, BankAccount, source="/bank", snapshots=snapshots)
    account = await accounts.load("acc-1")  # replay (from the latest snapshot)
    account.deposit(500)
    await accounts.save(account)  # append, expecting the loaded version
    await accounts.execute("acc-1", lambda a: a.deposit(5))  # load + command + save, retried
    then = await accounts.load("acc-1", as_of=3)  # the account at version 3 (or a datetime)

With a `Decider` instead of an aggregate class, `load` returns a `Versioned` state and
`handle(id, command)` decides, appends and returns the new events.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Generic, TypeVar, cast, overload

import msgspec

from tidings.codecs import EventTypes
from tidings.domain.aggregate import Aggregate
from tidings.domain.decider import Decider, Versioned
from tidings.domain.models import DeciderModel, Loaded, Model, model_of
from tidings.domain.shredding import Shredder
from tidings.domain.snapshots import (
    EveryNEvents,
    Snapshot,
    SnapshotCheck,
    SnapshotPolicy,
    SnapshotStore,
)
from tidings.errors import BackendError, CodecError, ConcurrencyConflict, DomainError
from tidings.events import Event
from tidings.eventstore.ports import NO_STREAM, AppendResult, EventStore

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)
C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")
T = TypeVar("T", bound=Loaded)
R = TypeVar("R")

logger = logging.getLogger("tidings.domain")


class Repository(Generic[T]):
    """Loads and saves one kind of aggregate (or decider state), one stream per id.

    Args:
        store: The event store.
        types: The registry of the payload classes the events use.
        model: An `Aggregate` subclass, or a `Decider`.
        source: The ``source`` attribute of the events saved.
        snapshots: Where snapshots go; None: always replay the whole stream.
        policy: When a save also writes a snapshot (default: every 100 events).
        shredder: Encrypts personal fields on save and reveals them on load (and seals
            snapshots); None: payloads are stored as they are.
    """

    @overload
    def __init__(
        self: Repository[A],
        store: EventStore,
        types: EventTypes,
        model: type[A],
        *,
        source: str,
        snapshots: SnapshotStore | None = None,
        policy: SnapshotPolicy | None = None,
        shredder: Shredder | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Repository[Versioned[S]],
        store: EventStore,
        types: EventTypes,
        model: Decider[C, S, E],
        *,
        source: str,
        snapshots: SnapshotStore | None = None,
        policy: SnapshotPolicy | None = None,
        shredder: Shredder | None = None,
    ) -> None: ...

    def __init__(
        self,
        store: EventStore,
        types: EventTypes,
        model: type[Aggregate] | Decider[Any, Any, Any],
        *,
        source: str,
        snapshots: SnapshotStore | None = None,
        policy: SnapshotPolicy | None = None,
        shredder: Shredder | None = None,
    ) -> None:
        self.store = store
        self.types = types
        self.source = source
        self.snapshots = snapshots
        self.policy: SnapshotPolicy = policy if policy is not None else EveryNEvents(100)
        self.shredder = shredder
        self._model = cast(Model[T], model_of(model))

    def stream_id(self, id: str) -> str:
        """Return the stream of an id: ``f"{stream_prefix}-{id}"``."""
        return f"{self._model.stream_prefix}-{id}"

    # -- load ---------------------------------------------------------------------------------

    async def load(self, id: str, *, as_of: int | datetime | None = None) -> T:
        """Return the instance for ``id``, built from its stream (version 0 if it has none).

        ``as_of`` loads it as it was at a version (int) or a recorded time (datetime). Saving
        such an instance fails with `ConcurrencyConflict` unless the stream has not moved on.
        """
        stream_id = self.stream_id(id)
        limit = await self._version_at(stream_id, as_of)
        target, stale = await self._start(id, stream_id, limit)
        await self._replay(target, stream_id, limit)
        if stale and limit is None and target.version > 0:
            await self._snapshot(target, stream_id)  # rebuild it now: the replay is done
        return target

    async def _version_at(self, stream_id: str, as_of: int | datetime | None) -> int | None:
        """Return the version bound of a load: a time becomes the version recorded by then."""
        if not isinstance(as_of, datetime):
            return as_of
        last = await self.store.read_stream(stream_id, as_of=as_of, backwards=True, limit=1)
        return last[0].version if last else 0

    async def _start(self, id: str, stream_id: str, limit: int | None) -> tuple[T, bool]:
        """Return the instance from the newest usable snapshot (or a blank one), and whether
        a snapshot was found that cannot be used (stale schema, forgotten subject)."""
        if self.snapshots is None:
            return self._model.blank(id), False
        try:
            snapshot = await self.snapshots.latest(stream_id, max_version=limit)
        except BackendError as exc:  # a cache that is down: replay the whole stream instead
            logger.warning("snapshots of %s unavailable: %s", stream_id, exc)
            return self._model.blank(id), False
        if snapshot is None:
            return self._model.blank(id), False
        target = await self._from_snapshot(id, snapshot)
        if target is None:
            return self._model.blank(id), True
        return target, False

    async def _from_snapshot(self, id: str, snapshot: Snapshot) -> T | None:
        """Return the snapshot's instance, or None when it is stale or unreadable."""
        if snapshot.schema_version != self._model.snapshot_version:
            return None
        try:
            state, subjects = await self._unseal(snapshot)
            if state is None:
                return None
            target = self._model.decode(id, snapshot.version, state)
        except (msgspec.DecodeError, msgspec.ValidationError, CodecError, DomainError) as exc:
            logger.warning("snapshot %s@%d ignored: %s", id, snapshot.version, exc)
            return None
        self._model.subjects(target).update(subjects)
        return target

    async def _unseal(self, snapshot: Snapshot) -> tuple[bytes | None, set[str]]:
        if self.shredder is None:
            return snapshot.state, set()
        aad = _snapshot_aad(snapshot.stream_id, snapshot.version)
        opened = await self.shredder.unseal(snapshot.state, aad)
        return (None, set()) if opened is None else opened

    async def _replay(self, target: T, stream_id: str, limit: int | None) -> None:
        """Fold the stream's events after the instance's version (up to ``limit``) into it."""
        records = await self.store.read_stream(
            stream_id, from_version=target.version + 1, as_of=limit
        )
        events = [record.event for record in records]
        if self.shredder is not None:
            events, found = await self.shredder.reveal_many(events)
            self._model.subjects(target).update(found)
        decode, evolve = self.types.from_event, self._model.evolve
        for record, event in zip(records, events, strict=True):
            evolve(target, decode(event), record.version)

    # -- save ---------------------------------------------------------------------------------

    async def save(self, target: T, *, caused_by: Event | None = None) -> AppendResult | None:
        """Append the pending events, expecting the version the instance was loaded at.

        Then writes a snapshot when the policy says so (a snapshot that fails to write is
        logged, not raised: the events are saved, and snapshots are only a cache).
        Returns the append's result, or None when nothing was pending.

        Raises:
            ConcurrencyConflict: the stream moved on since the instance was loaded.
        """
        pending = target.pending
        if not pending:
            return None
        before = target.version - len(pending)
        stream_id = self.stream_id(target.id)
        events = [
            self.types.to_event(p, source=self.source, subject=target.id, caused_by=caused_by)
            for p in pending
        ]
        if self.shredder is not None:
            events, subjects = await self.shredder.protect_many(events)
            self._model.subjects(target).update(subjects)
        expected = before if before > 0 else NO_STREAM
        result = await self.store.append(stream_id, events, expected_version=expected)
        saved = list(pending)
        pending.clear()
        check = SnapshotCheck(stream_id, before, result.version, saved)
        if self.snapshots is not None and self.policy.due(check):
            await self._snapshot(target, stream_id)
        return result

    async def _snapshot(self, target: T, stream_id: str) -> None:
        assert self.snapshots is not None
        try:
            state = await self._snapshot_state(target, stream_id)
            if state is None:
                return  # built from data of a subject forgotten since: never store it
            now_us = time.time_ns() // 1000
            snapshot = Snapshot(
                stream_id, target.version, self._model.snapshot_version, state, now_us
            )
            await self.snapshots.save(snapshot)
        except (BackendError, msgspec.EncodeError, TypeError) as exc:
            logger.warning("snapshot of %s@%d not saved: %s", stream_id, target.version, exc)

    async def _snapshot_state(self, target: T, stream_id: str) -> bytes | None:
        state = self._model.encode(target)
        if self.shredder is None:
            return state
        aad = _snapshot_aad(stream_id, target.version)
        return await self.shredder.seal(state, self._model.subjects(target), aad)

    # -- commands with retries ----------------------------------------------------------------

    async def execute(
        self,
        id: str,
        command: Callable[[T], object],
        *,
        retries: int = 3,
        caused_by: Event | None = None,
    ) -> T:
        """Load, run ``command(instance)`` (sync or async), save; rerun on a conflict.

        On `ConcurrencyConflict` the whole sequence runs again on a freshly loaded instance,
        at most ``retries`` more times (then the conflict is raised). ``command`` must
        therefore have no effect other than on the instance. Returns the saved instance.
        """

        async def attempt() -> T:
            target = await self.load(id)
            outcome = command(target)
            if inspect.isawaitable(outcome):
                await outcome
            await self.save(target, caused_by=caused_by)
            return target

        return await _retrying(attempt, retries)

    async def handle(
        self, id: str, command: object, *, retries: int = 3, caused_by: Event | None = None
    ) -> list[object]:
        """Decide ``command`` on the current state and append the events (decider style).

        Reruns on `ConcurrencyConflict` like `execute`; returns the events appended.

        Raises:
            DomainError: the repository was built on an aggregate class (use `execute`).
        """
        model = self._model
        if not isinstance(model, DeciderModel):
            raise DomainError("handle() needs a repository built on a Decider; use execute()")

        async def attempt() -> list[object]:
            target = cast(Versioned[Any], await self.load(id))
            events = model.decide(target, command)
            await self.save(cast(T, target), caused_by=caused_by)
            return events

        return await _retrying(attempt, retries)


async def _retrying(attempt: Callable[[], Awaitable[R]], retries: int) -> R:
    """Run ``attempt``; on `ConcurrencyConflict` run it again, at most ``retries`` more times."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    for tries in range(retries):
        try:
            return await attempt()
        except ConcurrencyConflict:
            # A little jitter, so that racers do not collide again in lockstep.
            await asyncio.sleep(random.uniform(0, 0.002 * (tries + 1)))
    return await attempt()


def _snapshot_aad(stream_id: str, version: int) -> bytes:
    return f"{stream_id}\x00{version}".encode()
