"""Subject keys in PostgreSQL (table ``tidings_subject_keys`` in the store's schema).

A deleted key's row is invisible at once, but PostgreSQL keeps dead rows on disk until VACUUM
reclaims them (autovacuum does, eventually); run ``VACUUM tidings_subject_keys`` after a batch
of deletions when the bytes must be gone from the data files sooner. Backups keep the key until
they expire.
"""

from __future__ import annotations

import time

from tidings.adapters.postgres.snapshots import PostgresTables
from tidings.domain.keys import KeyStore, new_key

__all__ = ["PostgresKeyStore"]


class PostgresKeyStore(PostgresTables, KeyStore):
    """A key store in PostgreSQL, usually in the event store's schema.

    Args:
        url: ``postgresql://user@host:port/dbname``.
        schema: The schema of ``tidings_subject_keys``; created when missing.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
    """

    table = "tidings_subject_keys"
    ddl = (
        """CREATE TABLE IF NOT EXISTS {table} (
            subject TEXT COLLATE "C" PRIMARY KEY,
            key BYTEA NOT NULL,
            created_at_us BIGINT NOT NULL)""",
    )

    def __init__(
        self, url: str, *, schema: str = "public", min_size: int = 1, max_size: int = 4
    ) -> None:
        super().__init__(url, schema=schema, min_size=min_size, max_size=max_size)
        self._get = self.render("SELECT key FROM {table} WHERE subject = %s")
        self._insert = self.render(
            """INSERT INTO {table} (subject, key, created_at_us) VALUES (%s, %s, %s)
            ON CONFLICT (subject) DO NOTHING"""
        )
        self._delete = self.render("DELETE FROM {table} WHERE subject = %s")

    async def get_or_create(self, subject: str) -> bytes:
        """Return the subject's key, creating a random one first when it has none."""
        key = await self.get(subject)
        while key is None:  # a concurrent forget may delete it between the two statements
            async with self._connection() as conn:
                await conn.execute(self._insert, (subject, new_key(), time.time_ns() // 1000))
                row = await (await conn.execute(self._get, (subject,))).fetchone()
            key = None if row is None else bytes(row[0])
        return key

    async def get(self, subject: str) -> bytes | None:
        """Return the subject's key, or None."""
        async with self._connection() as conn:
            row = await (await conn.execute(self._get, (subject,))).fetchone()
        return None if row is None else bytes(row[0])

    async def forget(self, subject: str) -> bool:
        """Delete the subject's key; return True when there was one."""
        async with self._connection() as conn:
            cursor = await conn.execute(self._delete, (subject,))
            return cursor.rowcount > 0
