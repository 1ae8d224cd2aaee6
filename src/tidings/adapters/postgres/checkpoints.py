"""The projection registry in PostgreSQL: DDL and statements, rendered once per schema.

One row per projection version in ``tidings_projections`` and one per skipped event in
``tidings_projection_failures``, in the read model's schema. Lease times come from the
database clock (``clock_timestamp()``), so runners on several machines agree on expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, LiteralString

from psycopg import sql

from tidings.projections.ports import ProjectionKey, ProjectionState, Status

__all__ = ["DDL", "REGISTRY", "Statements", "row_state", "versioned"]

REGISTRY: Final = "tidings_projections"
_NOW_US: Final = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"

DDL: Final[tuple[LiteralString, ...]] = (
    """CREATE TABLE IF NOT EXISTS {table} (
        name TEXT COLLATE "C" NOT NULL,
        version INTEGER NOT NULL,
        position BIGINT NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'running',
        error TEXT,
        active BOOLEAN NOT NULL DEFAULT false,
        lease_owner TEXT,
        lease_until_us BIGINT,
        last_recorded_us BIGINT NOT NULL DEFAULT 0,
        updated_at_us BIGINT NOT NULL,
        tables TEXT[] NOT NULL DEFAULT '{{}}',
        PRIMARY KEY (name, version))""",
    """CREATE TABLE IF NOT EXISTS {failures} (
        name TEXT COLLATE "C" NOT NULL,
        version INTEGER NOT NULL,
        position BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        error TEXT NOT NULL,
        recorded_at_us BIGINT NOT NULL,
        PRIMARY KEY (name, version, position))""",
)

_COLUMNS: Final = (
    "name, version, position, status, error, active, lease_owner, lease_until_us,"
    " last_recorded_us, updated_at_us"
)
_TEMPLATES: Final[dict[str, LiteralString]] = {
    "register": """INSERT INTO {table} (name, version, active, updated_at_us)
        SELECT %(name)s, %(version)s,
            NOT EXISTS (SELECT 1 FROM {table} WHERE name = %(name)s AND active), {now}
        ON CONFLICT (name, version) DO NOTHING""",
    "state": "SELECT {columns} FROM {table} WHERE name = %s AND version = %s",
    "states": "SELECT {columns} FROM {table} ORDER BY name, version",
    "tables": "SELECT tables FROM {table} WHERE name = %s AND version = %s",
    "set_tables": "UPDATE {table} SET tables = %s WHERE name = %s AND version = %s",
    "status": """UPDATE {table} SET status = %s, error = %s, updated_at_us = {now}
        WHERE name = %s AND version = %s""",
    "fence": """UPDATE {table}
        SET position = %s, last_recorded_us = %s, updated_at_us = {now}
        WHERE name = %s AND version = %s AND lease_owner = %s AND position = %s""",
    "acquire": """UPDATE {table}
        SET lease_owner = %(owner)s, lease_until_us = {now} + %(ttl_us)s
        WHERE name = %(name)s AND version = %(version)s
          AND (lease_owner IS NULL OR lease_owner = %(owner)s OR lease_until_us < {now})""",
    "release": """UPDATE {table} SET lease_owner = NULL, lease_until_us = NULL
        WHERE name = %s AND version = %s AND lease_owner = %s""",
    "activate": """UPDATE {table} SET active = (version = %s), updated_at_us = {now}
        WHERE name = %s""",
    "failure": """INSERT INTO {failures}
        (name, version, position, event_id, type, error, recorded_at_us)
        VALUES (%s, %s, %s, %s, %s, %s, %s)""",
    "failures": """SELECT position, event_id, type, error, recorded_at_us FROM {failures}
        WHERE name = %s AND version = %s ORDER BY position LIMIT %s""",
    "delete_failures": "DELETE FROM {failures} WHERE name = %s AND version = %s",
    "delete": "DELETE FROM {table} WHERE name = %s AND version = %s",
    "lock": "SELECT pg_advisory_xact_lock(%s)",
}


@dataclass(frozen=True)
class Statements:
    """The registry's statements for one schema, as bytes ready to send."""

    schema: str
    text: dict[str, bytes]

    @classmethod
    def render(cls, schema: str) -> Statements:
        """Render every statement for ``schema``."""
        names = {
            "table": sql.Identifier(schema, REGISTRY),
            "failures": sql.Identifier(schema, "tidings_projection_failures"),
            "now": sql.SQL(_NOW_US),
            "columns": sql.SQL(_COLUMNS),
        }
        text = {key: sql.SQL(t).format(**names).as_bytes() for key, t in _TEMPLATES.items()}
        return cls(schema, text)

    def __getitem__(self, name: str) -> bytes:
        return self.text[name]

    def view_ddl(self, table: str, version: int) -> tuple[bytes, bytes]:
        """Return the statements that point the view ``table`` at a version's table."""
        view = sql.Identifier(self.schema, table)
        drop = sql.SQL("DROP VIEW IF EXISTS {}").format(view).as_bytes()
        create = sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(
            view, versioned(self.schema, table, version)
        )
        return drop, create.as_bytes()

    def drop_table(self, table: str, version: int) -> bytes:
        """Return the statement that drops a version's table."""
        target = versioned(self.schema, table, version)
        return sql.SQL("DROP TABLE IF EXISTS {}").format(target).as_bytes()


def versioned(schema: str, table: str, version: int) -> sql.Identifier:
    """Return the identifier of a version's table: ``schema.table_v{version}``."""
    return sql.Identifier(schema, f"{table}_v{version}")


def row_state(row: tuple[Any, ...]) -> ProjectionState:
    """Return the state held in a registry row."""
    name, version, position, status, error, active, owner, until, recorded, updated = row
    return ProjectionState(
        key=ProjectionKey(name, version),
        position=position,
        status=Status(status),
        error=error,
        active=active,
        lease_owner=owner,
        lease_until_us=until,
        last_recorded_us=recorded,
        updated_at_us=updated,
    )
