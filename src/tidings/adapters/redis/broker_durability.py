"""The warning that the Redis server keeps acknowledged writes only in memory.

Redis acknowledges a write once it is in memory. Whether it survives a restart depends on the
server's persistence: with ``appendonly yes`` every write goes to the append-only file, and
``appendfsync always`` fsyncs it before the reply (a machine crash loses nothing acknowledged);
``everysec`` (the default when the AOF is on) can lose the last second in a machine crash but
nothing in a crash of the process; with the AOF off, only RDB snapshots remain and a restart
loses everything since the last one: published events, acks, group positions.

`RedisBroker` asks the server (``CONFIG GET appendonly appendfsync``) when it opens and warns
once, with `RedisDurabilityWarning`, when the AOF is off. Silence it with
``aof_warning=False`` (or ``?aof_warning=false`` in the URL). A server that refuses ``CONFIG``
(managed services often rename it) is not second-guessed: the broker logs that it could not
tell.
"""

from __future__ import annotations

import logging
import warnings
from typing import Final

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from tidings.adapters.redis.broker_cancel import call

__all__ = ["RedisDurabilityWarning", "persistence", "warn_unless_persistent"]

log: Final = logging.getLogger("tidings.redis")


class RedisDurabilityWarning(UserWarning):
    """Emitted when the Redis server does not write acknowledged events to its AOF."""


async def persistence(client: aioredis.Redis) -> dict[str, str] | None:
    """Return the server's ``appendonly`` and ``appendfsync`` settings (None if it won't say)."""
    try:
        reply = await call(client.config_get("append*"))
    except redis_errors.ResponseError as exc:
        log.info("could not read the server's persistence settings: %s", exc)
        return None
    return {_text(name): _text(value) for name, value in reply.items()}


async def warn_unless_persistent(client: aioredis.Redis) -> None:
    """Warn (and log) once when the server's AOF is off."""
    settings = await persistence(client)
    if settings is None or settings.get("appendonly") != "no":
        return
    message = (
        "the Redis server runs with appendonly no: a restart loses the events, acks and group"
        " positions written since its last snapshot. Run it with appendonly yes and"
        " appendfsync always (or everysec, losing up to a second in a machine crash). Silence"
        " this warning with RedisBroker(..., aof_warning=False) or ?aof_warning=false."
    )
    log.warning("%s", message)
    warnings.warn(message, RedisDurabilityWarning, stacklevel=4)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
