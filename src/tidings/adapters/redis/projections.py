"""Read models in Redis: handlers queue commands; one Lua script applies a batch atomically.

A handler never talks to Redis: it queues commands on its `RedisTx`. The batch is then sent as
one script that checks the lease and the stored position first (nothing runs if either is
wrong: a replay after a crash is a no-op), runs every command and moves the position, all in
one atomic step. So effects are exactly-once even for non-idempotent commands (``HINCRBY``),
within what Redis itself keeps: a Redis without persistence (or with ``appendfsync
everysec``) may lose its last writes on a crash of the server, positions included; the
projection then replays from the older position, still once.

Redis cannot roll back: if a command fails inside the script (a wrong type), the events before
it stay committed with their position, the failing event's earlier commands stay applied, and
the failure policy takes over at that event. Handlers may be ``async def`` (they run before
anything is sent, so they may read other systems). Keys must be on one Redis (no cluster).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from tidings.adapters.redis import checkpoints as lua
from tidings.adapters.redis import translate_errors
from tidings.errors import BackendError, CheckpointConflict
from tidings.eventstore.ports import RecordedEvent
from tidings.lifecycle import Resource
from tidings.projections.cancel import raise_if_cancelling
from tidings.projections.errors import HandlerError, LeaseLost, ProjectionError
from tidings.projections.ports import (
    Batch,
    Failure,
    ProjectionKey,
    ProjectionState,
    ReadModel,
    Status,
)
from tidings.projections.projector import Projection

__all__ = ["RedisReadModel", "RedisTx"]

Arg = str | bytes | int | float
_FAILURE: Final = msgspec.json.Encoder()


class RedisTx:
    """A handler's queue of Redis commands for one batch.

    Attributes:
        key: The projection version written to.
        record: The event being applied.
    """

    def __init__(self, key: ProjectionKey, prefix: str) -> None:
        self.key = key
        self.record: RecordedEvent | None = None
        self.commands: list[list[list[Arg]]] = []
        self._prefix = f"{prefix}:{key.name}:v{key.version}:"

    def namespaced(self, *parts: Arg) -> str:
        """Return this version's key made of ``parts``: ``{prefix}:{name}:v{version}:a:b``."""
        return self._prefix + ":".join(map(str, parts))

    def call(self, *command: Arg) -> None:
        """Queue one command (``tx.call("HINCRBY", tx.namespaced("n"), "a", 1)``)."""
        self.commands[-1].append(list(command))

    def _start(self, record: RecordedEvent | None) -> None:
        self.record = record
        self.commands.append([])


class RedisReadModel(Resource, ReadModel):
    """Projection keys and their registry in one Redis database (``redis://host:port/db``).

    Args:
        url: The Redis URL.
        prefix: Prepended to every key this read model and its projections use.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "tidings"):
        self.url = url
        self.prefix = prefix
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self.before_commit: Callable[[], Awaitable[None]] | None = None
        """Fault injection: awaited after the handlers ran, just before the script is sent."""

    @property
    def client(self) -> Redis:
        """The redis-py client (for readers), once open."""
        if self._client is None:
            raise ProjectionError("the read model is not open", projection="")
        return self._client

    async def _open(self) -> None:
        client: Redis = Redis.from_url(self.url)
        with translate_errors():
            await client.ping()
        self._client = client

    async def _close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def namespace(self, name: str, version: int | None = None) -> str:
        """Return the key prefix of a projection's version (its active one when None)."""
        if version is None:
            raw = await self._call("get", self._active(name))
            version = int(raw or 0)
        return f"{self.prefix}:{name}:v{version}:"

    # -- registry and leases ------------------------------------------------------------------

    async def register(self, key: ProjectionKey) -> ProjectionState:
        """Create the entry of a version when missing; the first of a name becomes active."""
        keys = [self._entry(key), f"{self.prefix}:projections", self._active(key.name)]
        await self._script(lua.REGISTER, keys, [f"{key.name}:{key.version}", key.version])
        return await self._known(key)

    async def lookup(self, key: ProjectionKey) -> ProjectionState | None:
        """Return a version's entry, or None."""
        reply = await self._script(lua.LOOKUP, [self._entry(key), self._active(key.name)], [])
        if not reply[0]:
            return None
        return _state(key, reply[1], reply[2])

    async def states(self) -> list[ProjectionState]:
        """Return every entry, by name and version."""
        members = await self._call("smembers", f"{self.prefix}:projections")
        keys = sorted(_key_of(m) for m in members)
        found = [await self.lookup(key) for key in keys]
        return [state for state in found if state is not None]

    async def set_status(
        self, key: ProjectionKey, status: Status, *, error: str | None = None
    ) -> None:
        """Mark a version running (clearing its error) or failed with an error."""
        shown = (error or "") if status is Status.FAILED else ""
        if not await self._script(lua.STATUS, [self._entry(key)], [status.value, shown]):
            raise ProjectionError(f"{key} is not registered", projection=key.name)

    async def activate(self, key: ProjectionKey) -> None:
        """Make this version the active one of its name."""
        keys = [self._entry(key), self._active(key.name)]
        if not await self._script(lua.ACTIVATE, keys, [key.version]):
            raise ProjectionError(f"{key} is not registered", projection=key.name)

    async def failures(self, key: ProjectionKey, *, limit: int = 100) -> list[Failure]:
        """Return the recorded failures of a version in position order."""
        raw = await self._call("lrange", f"{self._entry(key)}:failures", 0, limit - 1)
        return [msgspec.json.decode(item, type=Failure) for item in raw]

    async def acquire_lease(self, key: ProjectionKey, owner: str, ttl: float) -> bool:
        """Take or renew the lease for ``ttl`` seconds (Redis' clock)."""
        got = await self._script(lua.ACQUIRE, [self._entry(key)], [owner, int(ttl * 1e6)])
        if got == -1:
            raise ProjectionError(f"{key} is not registered", projection=key.name)
        return bool(got)

    async def release_lease(self, key: ProjectionKey, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        await self._script(lua.RELEASE, [self._entry(key)], [owner])

    # -- read model ---------------------------------------------------------------------------

    async def prepare(self, projection: Projection[Any]) -> None:
        """Register the version and run the commands its ``setup`` queues."""
        await self.register(projection.key)
        tx = RedisTx(projection.key, self.prefix)
        tx._start(None)
        await _maybe_await(projection.setup(tx))
        for command in tx.commands[0]:
            await self._call("execute_command", *command)

    async def apply(self, projection: Projection[Any], batch: Batch) -> None:
        """Apply a batch and move the position in one script, fenced (see the module)."""
        tx = RedisTx(projection.key, self.prefix)
        await _run_handlers(projection, batch.records, tx)
        if self.before_commit is not None:
            await self.before_commit()
        reply = await self._script(lua.APPLY, self._batch_keys(projection.key), _args(batch, tx))
        _check(projection, batch, reply)

    async def drop(self, key: ProjectionKey) -> None:
        """Delete a version's keys and entry (never the active version's)."""
        state = await self._known(key)
        if state.active:
            raise ProjectionError(f"{key} is active", projection=key.name)
        async for found in self.client.scan_iter(
            match=f"{self.prefix}:{key.name}:v{key.version}:*"
        ):
            await self._call("unlink", found)
        await self._call("unlink", self._entry(key), f"{self._entry(key)}:failures")
        await self._call("srem", f"{self.prefix}:projections", f"{key.name}:{key.version}")

    # -- helpers ------------------------------------------------------------------------------

    def _entry(self, key: ProjectionKey) -> str:
        return f"{self.prefix}:projection:{key.name}:{key.version}"

    def _active(self, name: str) -> str:
        return f"{self.prefix}:projection:{name}:active"

    def _batch_keys(self, key: ProjectionKey) -> list[str]:
        return [self._entry(key), f"{self._entry(key)}:failures"]

    async def _known(self, key: ProjectionKey) -> ProjectionState:
        state = await self.lookup(key)
        if state is None:
            raise ProjectionError(f"{key} is not registered", projection=key.name)
        return state

    async def _script(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        await self._ensure_open()
        runner = self._scripts.get(script)
        if runner is None:
            runner = self._scripts[script] = self.client.register_script(script)
        with translate_errors():
            reply = await runner(keys=keys, args=args)
        raise_if_cancelling()  # redis-py may swallow a cancellation on Python 3.11
        return reply

    async def _call(self, method: str, *args: Any) -> Any:
        await self._ensure_open()
        with translate_errors():
            reply = await getattr(self.client, method)(*args)
        raise_if_cancelling()
        return reply


async def _run_handlers(
    projection: Projection[Any], records: Sequence[RecordedEvent], tx: RedisTx
) -> None:
    dispatch = projection.dispatch()
    for index, record in enumerate(records):
        tx._start(record)
        try:
            result = dispatch[record.event.type](record, tx)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception as exc:
            raise HandlerError(projection.name, index, record, exc) from exc


def _args(batch: Batch, tx: RedisTx) -> list[Arg]:
    failure = b"" if batch.failure is None else _FAILURE.encode(batch.failure)
    args: list[Arg] = [batch.owner, batch.after, batch.up_to, batch.last_recorded_us, failure]
    args.append(len(batch.records))
    for record, commands in zip(batch.records, tx.commands, strict=True):
        args += [record.position - 1, len(commands)]
        for command in commands:
            args += [len(command), *command]
    return args


def _check(projection: Projection[Any], batch: Batch, reply: list[Any]) -> None:
    outcome = reply[0].decode()
    if outcome == "ok":
        return
    key = projection.key
    if outcome == "lease":
        raise LeaseLost(key.name, batch.owner, reply[1].decode() or None)
    if outcome == "position":
        raise CheckpointConflict(str(key), int(reply[1] or 0), batch.up_to)
    index, text = int(reply[1]), reply[2].decode()
    record = batch.records[index]
    error = HandlerError(projection.name, index, record, BackendError(text, backend="redis"))
    error.committed = record.position - 1
    raise error


def _state(key: ProjectionKey, fields: list[bytes], active: bytes) -> ProjectionState:
    values = {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}
    until = values.get("lease_until_us")
    return ProjectionState(
        key=key,
        position=int(values.get("position", 0)),
        status=Status(values.get("status", "running")),
        error=values.get("error") or None,
        active=active.decode() == str(key.version),
        lease_owner=values.get("lease_owner"),
        lease_until_us=int(until) if until else None,
        last_recorded_us=int(values.get("last_recorded_us", 0)),
        updated_at_us=int(values.get("updated_at_us", 0)),
    )


def _key_of(member: bytes) -> ProjectionKey:
    name, _, version = member.decode().rpartition(":")
    return ProjectionKey(name, int(version))


async def _maybe_await(value: object) -> object:
    return await value if inspect.isawaitable(value) else value
