"""Processed keys in Redis: one string key each, expired by Redis itself.

A key ``{prefix}:dedup:{key}`` holds ``d`` when done, or ``c:{owner}`` while claimed; its
Redis expiry is the time to live (or the lease). Claims are ``SET NX``-style (a short Lua
script, so that renewing one's own claim and telling DONE from BUSY take one round trip),
records and releases are scripts too, so every operation is atomic on the server. Redis
deletes expired keys by itself: `RedisDedupStore.purge` has nothing to do.

Durability is the server's: with the default snapshotting a key recorded in the last
seconds before a Redis crash may be lost (and its effect then produced again); run Redis with
``appendonly yes`` and ``appendfsync always`` (or ``everysec``, losing up to a second) when
that matters.
"""

from __future__ import annotations

import math
from typing import Final

import redis.asyncio as aioredis

from tidings.adapters.redis import translate_errors
from tidings.idempotency.ports import (
    DEFAULT_LEASE,
    DEFAULT_TTL,
    Claim,
    DedupStore,
    ttl_seconds,
)
from tidings.lifecycle import Resource

__all__ = ["RedisDedupStore"]

_DONE: Final = b"d"
_CLAIM: Final = """
local v = redis.call('GET', KEYS[1])
if v == 'd' then return 2 end
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RECORD: Final = """
if redis.call('GET', KEYS[1]) == 'd' then return 0 end
if ARGV[1] == '' then redis.call('SET', KEYS[1], 'd')
else redis.call('SET', KEYS[1], 'd', 'PX', ARGV[1]) end
return 1
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_CLAIMS: Final = {0: Claim.BUSY, 1: Claim.ACQUIRED, 2: Claim.DONE}


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisDedupStore(Resource, DedupStore):
    """A dedup store in Redis (``redis://host:port/db``).

    Args:
        url: The Redis URL.
        prefix: Prepended to every key (``{prefix}:dedup:{key}``).
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "tidings"):
        self.url = url
        self.prefix = prefix
        self._client: aioredis.Redis | None = None

    async def _open(self) -> None:
        client = aioredis.Redis.from_url(self.url)
        try:
            with translate_errors():
                await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._claim = client.register_script(_CLAIM)
        self._record = client.register_script(_RECORD)
        self._release = client.register_script(_RELEASE)

    async def _close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _key(self, key: str) -> str:
        return f"{self.prefix}:dedup:{key}"

    async def claim(self, key: str, owner: str, *, lease: float = DEFAULT_LEASE) -> Claim:
        """Claim a free or expired key (or renew one's own claim) for ``lease`` seconds."""
        await self._ensure_open()
        with translate_errors():
            found = await self._claim(
                keys=[self._key(key)], args=[f"c:{owner}", _milliseconds(lease)]
            )
        return _CLAIMS[int(found)]

    async def record(self, key: str, *, ttl: float | None = DEFAULT_TTL) -> bool:
        """Mark the key done for ``ttl`` seconds; False when it was done already."""
        seconds = ttl_seconds(ttl)
        expiry = "" if seconds is None else _milliseconds(seconds)
        await self._ensure_open()
        with translate_errors():
            return bool(await self._record(keys=[self._key(key)], args=[expiry]))

    async def seen(self, key: str) -> bool:
        """Return True when the key is done and not expired."""
        await self._ensure_open()
        assert self._client is not None
        with translate_errors():
            return bool(await self._client.get(self._key(key)) == _DONE)

    async def release(self, key: str, owner: str) -> bool:
        """Drop ``owner``'s claim on the key; False when it held none."""
        await self._ensure_open()
        with translate_errors():
            return bool(await self._release(keys=[self._key(key)], args=[f"c:{owner}"]))

    async def purge(self, *, batch_size: int = 1000) -> int:
        """Return 0: Redis deletes expired keys by itself."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        await self._ensure_open()
        return 0
