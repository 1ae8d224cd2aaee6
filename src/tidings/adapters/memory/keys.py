"""Subject keys in this process's memory: the same contract as the durable key stores."""

from __future__ import annotations

from tidings.domain.keys import KeyStore, new_key
from tidings.lifecycle import Resource

__all__ = ["MemoryKeyStore"]


class MemoryKeyStore(Resource, KeyStore):
    """A key store in memory (for tests; the keys vanish with the process)."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._keys: dict[str, bytes] = {}

    async def get_or_create(self, subject: str) -> bytes:
        """Return the subject's key, creating a random one first when it has none."""
        await self._ensure_open()
        return self._keys.setdefault(subject, new_key())

    async def get(self, subject: str) -> bytes | None:
        """Return the subject's key, or None."""
        await self._ensure_open()
        return self._keys.get(subject)

    async def forget(self, subject: str) -> bool:
        """Delete the subject's key; return True when there was one."""
        await self._ensure_open()
        return self._keys.pop(subject, None) is not None
