"""`upsert`: statements that a redelivery leaves without effect, on SQLite."""

from __future__ import annotations

import sqlite3

import pytest

from tidings.idempotency import upsert


@pytest.fixture
def conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE orders (order_id TEXT PRIMARY KEY, status TEXT, version INT)")
    return conn


def test_upsert_twice_leaves_one_row(conn: sqlite3.Connection) -> None:
    sql = upsert("orders", ["order_id", "status", "version"], key=["order_id"])
    for _ in range(2):
        conn.execute(sql, ("o-1", "shipped", 1))
    assert conn.execute("SELECT * FROM orders").fetchall() == [("o-1", "shipped", 1)]


def test_upsert_with_a_guard_ignores_an_older_event(conn: sqlite3.Connection) -> None:
    sql = upsert("orders", ["order_id", "status", "version"], key=["order_id"], newer="version")
    conn.execute(sql, ("o-1", "delivered", 2))
    conn.execute(sql, ("o-1", "shipped", 1))
    assert conn.execute("SELECT status FROM orders").fetchall() == [("delivered",)]


def test_upsert_without_updates_does_nothing_on_conflict(conn: sqlite3.Connection) -> None:
    sql = upsert("orders", ["order_id", "status"], key=["order_id"], update=[])
    conn.execute(sql, ("o-1", "placed"))
    conn.execute(sql, ("o-1", "changed"))
    assert conn.execute("SELECT status FROM orders").fetchall() == [("placed",)]


def test_upsert_uses_the_drivers_marker() -> None:
    sql = upsert("s.orders", ["order_id", "status"], key=["order_id"], marker="%s")
    assert sql.startswith('INSERT INTO "s"."orders" AS t ("order_id", "status") VALUES (%s, %s)')


@pytest.mark.parametrize("name", ["orders; DROP TABLE x", "", "1abc", 'a"b'])
def test_upsert_refuses_a_name_that_is_not_an_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        upsert(name, ["a"], key=["a"])


def test_upsert_refuses_a_key_outside_the_columns() -> None:
    with pytest.raises(ValueError, match="subset"):
        upsert("orders", ["a"], key=["b"])
