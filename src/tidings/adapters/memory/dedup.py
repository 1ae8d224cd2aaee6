"""Processed keys in this process's memory: the same contract as the durable dedup stores.

Expired keys count as absent at once and are deleted by `MemoryDedupStore.purge`. Everything
happens on the event loop between two awaits, so each operation is atomic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tidings.idempotency.ports import DEFAULT_LEASE, DEFAULT_TTL, Claim, DedupStore, ttl_seconds
from tidings.lifecycle import Resource

__all__ = ["MemoryDedupStore"]


@dataclass(slots=True)
class _Entry:
    done: bool
    owner: str | None
    expires_at: float | None  # None: never

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


class MemoryDedupStore(Resource, DedupStore):
    """A dedup store in memory (tests, and consumers that need no memory across restarts).

    Args:
        url: ``memory://`` (kept for symmetry with the other backends).
        clock: Seconds, increasing (``time.monotonic`` by default; tests may pass their own).
    """

    def __init__(self, url: str = "memory://", *, clock: Callable[[], float] | None = None):
        self.url = url
        self._clock = clock or time.monotonic
        self._keys: dict[str, _Entry] = {}

    def _live(self, key: str) -> _Entry | None:
        entry = self._keys.get(key)
        return entry if entry is not None and entry.live(self._clock()) else None

    def _expiry(self, seconds: float | None) -> float | None:
        return None if seconds is None else self._clock() + seconds

    async def claim(self, key: str, owner: str, *, lease: float = DEFAULT_LEASE) -> Claim:
        """Claim a free or expired key (or renew one's own claim) for ``lease`` seconds."""
        await self._ensure_open()
        entry = self._live(key)
        if entry is not None and entry.done:
            return Claim.DONE
        if entry is not None and entry.owner != owner:
            return Claim.BUSY
        self._keys[key] = _Entry(False, owner, self._expiry(lease))
        return Claim.ACQUIRED

    async def record(self, key: str, *, ttl: float | None = DEFAULT_TTL) -> bool:
        """Mark the key done for ``ttl`` seconds; False when it was done already."""
        ttl = ttl_seconds(ttl)
        await self._ensure_open()
        entry = self._live(key)
        if entry is not None and entry.done:
            return False
        self._keys[key] = _Entry(True, None, self._expiry(ttl))
        return True

    async def seen(self, key: str) -> bool:
        """Return True when the key is done and not expired."""
        await self._ensure_open()
        entry = self._live(key)
        return entry is not None and entry.done

    async def release(self, key: str, owner: str) -> bool:
        """Drop ``owner``'s claim on the key; False when it held none."""
        await self._ensure_open()
        entry = self._live(key)
        if entry is None or entry.done or entry.owner != owner:
            return False
        del self._keys[key]
        return True

    async def purge(self, *, batch_size: int = 1000) -> int:
        """Delete every expired key; return how many."""
        await self._ensure_open()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        now = self._clock()
        expired = [key for key, entry in self._keys.items() if not entry.live(now)]
        for key in expired:
            del self._keys[key]
        return len(expired)
