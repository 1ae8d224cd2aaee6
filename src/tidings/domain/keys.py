"""The key store port: one secret key per data subject, deleted to forget the subject.

Crypto-shredding keeps personal data encrypted in the (immutable) event store and the keys
here; deleting a subject's key makes every copy of its data unreadable at once, in every stream,
backup and replica of the event store, while the events themselves stay untouched (so their
hash chains still verify).

Adapters: ``tidings.adapters.{memory,sqlite,postgres}.keys`` (table ``tidings_subject_keys``).
A deleted key is gone from the live table at once; the SQLite adapter also overwrites freed
pages (``secure_delete``) and checkpoints the WAL; on PostgreSQL the dead row stays on disk until
VACUUM. Database backups that hold the key table must age out too.
"""

from __future__ import annotations

import os
from typing import Final, Protocol, runtime_checkable

__all__ = ["KEY_BYTES", "KeyStore", "new_key"]

KEY_BYTES: Final = 32
"""Keys are 256-bit AES keys."""


def new_key() -> bytes:
    """Return a fresh random 256-bit key."""
    return os.urandom(KEY_BYTES)


@runtime_checkable
class KeyStore(Protocol):
    """One secret key per data subject.

    Contract, the same on every backend (``tidings.testing.conformance.keys`` checks it):

    - `get_or_create` is atomic: concurrent calls for one subject, from any number of tasks or
      processes, all return the same key.
    - After `forget` returns, `get` returns None for the subject and the old key is never
      returned again; a later `get_or_create` makes a new, different key.
    - Keys are 32 random bytes; every method raises `ClosedError` after ``aclose()``, which is
      idempotent; driver errors are raised as `BackendError`.
    """

    async def get_or_create(self, subject: str) -> bytes:
        """Return the subject's key, creating a random one first when it has none."""
        ...

    async def get(self, subject: str) -> bytes | None:
        """Return the subject's key, or None when it has none (never had, or forgotten)."""
        ...

    async def forget(self, subject: str) -> bool:
        """Delete the subject's key; return True when there was one."""
        ...

    async def aclose(self) -> None:
        """Close connections; idempotent."""
        ...
