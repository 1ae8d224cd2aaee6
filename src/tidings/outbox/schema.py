"""The SQL text of the outbox table, per dialect, with no driver imported.

The sqlite3 adapter, the psycopg adapter and the SQLAlchemy integration share these
statements, so a row written by any of them is read by any relay. Parameters are named in the
``:name`` style (sqlite3 and SQLAlchemy ``text()``); `pyformat` turns a statement into
psycopg's ``%(name)s`` style. Table and schema names are checked identifiers, never values.

PostgreSQL writers take a transaction-level advisory lock on the aggregate before the row gets
its ``seq``: two transactions that write events of one aggregate then commit one after the
other, in ``seq`` order, even when the application takes no lock of its own. That is what lets
a relay read an aggregate's rows by ``seq`` and publish them in commit order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from tidings.outbox.rows import SHARDS, check_table

__all__ = ["PostgresSQL", "SQLiteSQL", "pyformat"]

_NAMED: Final = re.compile(r"(?<![:\w]):([a-z_]+)")
_COLUMNS: Final = (
    "id, occurred_at, aggregate_type, aggregate_id, event_type, payload, flags, topic,"
    " partition_key, shard"
)


def _named(template: str, **names: str) -> str:
    """Return a template with checked identifiers put in (never values: those are parameters)."""
    return template.format(**names)


def pyformat(statement: str) -> str:
    """Return a ``:name`` statement with psycopg's ``%(name)s`` placeholders."""
    return _NAMED.sub(r"%(\1)s", statement)


_SQLITE_FETCH: Final = """SELECT seq, payload, flags, topic, partition_key, aggregate_type,
    aggregate_id, occurred_at FROM {t} WHERE processed_at IS NULL ORDER BY seq LIMIT ?"""
_SQLITE_STAMP: Final = "UPDATE {t} SET processed_at = ? WHERE seq = ?"
_SQLITE_DELETE: Final = "DELETE FROM {t} WHERE seq = ?"
_SQLITE_PURGE: Final = """DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t}
    WHERE processed_at IS NOT NULL AND processed_at < ? LIMIT ?)"""
_STATUS: Final = """SELECT count(*) FILTER (WHERE processed_at IS NULL),
    min(occurred_at) FILTER (WHERE processed_at IS NULL),
    count(*) FILTER (WHERE processed_at IS NOT NULL) FROM {t}"""


@dataclass(frozen=True, slots=True)
class SQLiteSQL:
    """The outbox statements for one SQLite table."""

    table: str

    def __post_init__(self) -> None:
        check_table(self.table)

    def ddl(self) -> list[str]:
        """Return the statements that create the table and its indexes (idempotent)."""
        t = self.table
        return [
            f"""CREATE TABLE IF NOT EXISTS {t} (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    occurred_at TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    flags INTEGER NOT NULL DEFAULT 0,
    topic TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    shard INTEGER NOT NULL,
    processed_at TEXT
)""",
            f"CREATE INDEX IF NOT EXISTS {t}_pending ON {t} (seq) WHERE processed_at IS NULL",
            f"CREATE INDEX IF NOT EXISTS {t}_relayed ON {t} (processed_at)"
            " WHERE processed_at IS NOT NULL",
        ]

    def insert(self) -> str:
        """Return the INSERT of one row (``occurred_at`` as ISO 8601 text)."""
        values = ", ".join(":" + name.strip() for name in _COLUMNS.split(","))
        return _named("INSERT INTO {t} ({c}) VALUES ({v})", t=self.table, c=_COLUMNS, v=values)

    def fetch(self) -> str:
        """Return the SELECT of the oldest unrelayed rows (``?`` is the limit)."""
        return _named(_SQLITE_FETCH, t=self.table)

    def mark(self, *, keep: bool) -> str:
        """Return the statement that marks one row relayed: stamp it (``keep``) or delete it."""
        return _named(_SQLITE_STAMP if keep else _SQLITE_DELETE, t=self.table)

    def purge(self) -> str:
        """Return the DELETE of a batch of rows relayed before a time (cutoff, limit)."""
        return _named(_SQLITE_PURGE, t=self.table)

    def status(self) -> str:
        """Return the SELECT of the backlog, its oldest time and the relayed rows kept."""
        return _named(_STATUS, t=self.table)


_PG_INSERT: Final = """WITH serialised AS (SELECT pg_advisory_xact_lock(CAST(:lock AS bigint)))
INSERT INTO {t} ({c}) SELECT {v} FROM serialised"""
# A scalar subquery with LIMIT 1 runs once per shard as one index probe; EXISTS may be planned
# as a join that reads the whole backlog, on every fetch.
_PG_CLAIM_SHARDS: Final = """SELECT s.shard FROM {s} AS s
WHERE (SELECT true FROM {t} AS o WHERE o.shard = s.shard AND o.processed_at IS NULL LIMIT 1)
ORDER BY random() LIMIT :shards FOR UPDATE SKIP LOCKED"""
# The oldest rows of each shard by the (shard, seq) index, then the oldest of those: reads at
# most limit x shards index entries, where one "shard = ANY(...) ORDER BY seq" sorts the whole
# backlog on every fetch (quadratic when a relay drains a large backlog).
_PG_FETCH: Final = """WITH oldest AS (SELECT o.seq
    FROM unnest(CAST(:shards AS smallint[])) AS s (shard) CROSS JOIN LATERAL (SELECT seq
        FROM {t} WHERE processed_at IS NULL AND shard = s.shard ORDER BY seq LIMIT :limit) AS o
    ORDER BY o.seq LIMIT :limit)
SELECT t.seq, t.payload::text, t.flags, t.topic, t.partition_key, t.aggregate_type,
    t.aggregate_id, t.occurred_at FROM {t} AS t JOIN oldest USING (seq) ORDER BY t.seq"""
_PG_STAMP: Final = "UPDATE {t} SET processed_at = now() WHERE seq = ANY(:seqs)"
_PG_DELETE: Final = "DELETE FROM {t} WHERE seq = ANY(:seqs)"
_PG_PURGE: Final = """DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t}
    WHERE processed_at < now() - make_interval(secs => :seconds) LIMIT :limit
    FOR UPDATE SKIP LOCKED)"""


@dataclass(frozen=True, slots=True)
class PostgresSQL:
    """The outbox statements for one PostgreSQL table in one schema."""

    schema: str
    table: str

    def __post_init__(self) -> None:
        check_table(self.table)
        check_table(self.schema.lower())

    @property
    def qualified(self) -> str:
        """The quoted ``"schema"."table"``."""
        return f'"{self.schema}"."{self.table}"'

    @property
    def shards(self) -> str:
        """The quoted table of shard locks."""
        return f'"{self.schema}"."{self.table}_shards"'

    @property
    def channel(self) -> str:
        """The NOTIFY channel a commit of new rows announces itself on."""
        return f"{self.schema}.{self.table}"

    def ddl(self) -> list[str]:
        """Return the statements that create the tables, indexes and NOTIFY trigger."""
        t, s, q = self.table, f'"{self.schema}"', self.qualified
        function = f'{s}."{t}_notify"'
        return [
            f"CREATE SCHEMA IF NOT EXISTS {s}",
            f"""CREATE TABLE IF NOT EXISTS {q} (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    flags smallint NOT NULL DEFAULT 0,
    topic text NOT NULL,
    partition_key text NOT NULL,
    shard smallint NOT NULL,
    processed_at timestamptz
)""",
            f'CREATE INDEX IF NOT EXISTS "{t}_pending" ON {q} (shard, seq)'
            " WHERE processed_at IS NULL",
            f'CREATE INDEX IF NOT EXISTS "{t}_relayed" ON {q} (processed_at)'
            " WHERE processed_at IS NOT NULL",
            f"CREATE TABLE IF NOT EXISTS {self.shards} (shard smallint PRIMARY KEY)",
            f"INSERT INTO {self.shards} SELECT generate_series(0, {SHARDS - 1})"
            " ON CONFLICT DO NOTHING",
            f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('{self.channel}', ''); RETURN NULL; END $$""",
            f'DROP TRIGGER IF EXISTS "{t}_notify" ON {q}',
            f'CREATE TRIGGER "{t}_notify" AFTER INSERT ON {q}'
            f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        ]

    def insert(self) -> str:
        """Return the INSERT of one row, after the aggregate's advisory lock (``:lock``)."""
        values = ", ".join(
            "CAST(:payload AS jsonb)" if name.strip() == "payload" else ":" + name.strip()
            for name in _COLUMNS.split(",")
        )
        return _named(_PG_INSERT, t=self.qualified, c=_COLUMNS, v=values)

    def claim_shards(self) -> str:
        """Return the SELECT that locks up to ``:shards`` free shards holding unrelayed rows."""
        return _named(_PG_CLAIM_SHARDS, t=self.qualified, s=self.shards)

    def fetch(self) -> str:
        """Return the SELECT of the oldest unrelayed rows of some shards (``:shards``)."""
        return _named(_PG_FETCH, t=self.qualified)

    def mark(self, *, keep: bool) -> str:
        """Return the statement that marks rows (``:seqs``) relayed: stamp or delete them."""
        return _named(_PG_STAMP if keep else _PG_DELETE, t=self.qualified)

    def purge(self) -> str:
        """Return the DELETE of a batch of rows relayed more than ``:seconds`` ago."""
        return _named(_PG_PURGE, t=self.qualified)

    def status(self) -> str:
        """Return the SELECT of the backlog, its oldest time and the relayed rows kept."""
        return _named(_STATUS, t=self.qualified)
