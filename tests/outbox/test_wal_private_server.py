"""The tableless outbox on a private PostgreSQL cluster: a server without logical decoding,
and a server crash after a mark (which the shared server must never suffer), with marks kept
in the slot only and with marks committed to a table too.

The cluster starts with PostgreSQL's default ``wal_level = replica``; the crash tests turn
logical decoding on (``ALTER SYSTEM``) and restart it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest
from tests.conformance.harness_postgres import BIN, PrivateCluster
from tests.outbox.wal_support import event, numbers

from tidings.adapters.postgres import outbox_wal
from tidings.adapters.postgres.outbox_wal import PostgresWalOutboxSource
from tidings.errors import ConfigurationError

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    if os.geteuid() != 0 or not (BIN / "initdb").exists():
        pytest.skip("a private PostgreSQL cluster needs root and PostgreSQL 15's binaries")
    made = PrivateCluster()
    try:
        made.start()
        yield made
    finally:
        made.stop()


def crash_and_restart(cluster: PrivateCluster) -> None:
    """SIGKILL the postmaster and start it again (crash recovery runs)."""
    cluster.kill()
    for attempt in range(20):
        try:
            cluster.start()
            return
        except subprocess.CalledProcessError:  # its zombie is not reaped yet
            if attempt == 19:
                raise
            time.sleep(0.5)


async def test_open_explains_that_wal_level_must_be_logical(cluster: PrivateCluster) -> None:
    source = PostgresWalOutboxSource(cluster.url, slot="outbox")
    with pytest.raises(ConfigurationError, match="wal_level = logical"):
        await source.open()
    await source.aclose()


async def ensure_logical(cluster: PrivateCluster) -> None:
    """Turn logical decoding on (``ALTER SYSTEM`` and a restart) unless it is on already."""
    async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
        level = await (await conn.execute("SHOW wal_level")).fetchone()
        if level == ("logical",):
            return
        await conn.execute("ALTER SYSTEM SET wal_level = logical")
    await asyncio.to_thread(crash_and_restart, cluster)


@pytest.mark.parametrize(
    ("mark_table", "after_crash"),
    [(None, [1]), ("tidings_outbox_marks", [])],
    ids=["marks-in-the-slot", "mark-table"],
)
async def test_server_crash_after_a_mark_relays_the_batch_again_unless_marks_are_committed(
    cluster: PrivateCluster, mark_table: str | None, after_crash: list[int]
) -> None:
    await ensure_logical(cluster)
    slot = "outbox_marks" if mark_table else "outbox"
    options = {"slot": slot, "mark_table": mark_table}
    async with PostgresWalOutboxSource(cluster.url, **options) as source:  # type: ignore[arg-type]
        async with await psycopg.AsyncConnection.connect(cluster.url) as conn:
            await outbox_wal.add(conn, event(1), topic="orders")
            await conn.commit()
        await source.mark_relayed(await source.fetch(10))
        assert await source.fetch(10) == []
    await asyncio.to_thread(crash_and_restart, cluster)  # SIGKILL: no shutdown checkpoint
    async with PostgresWalOutboxSource(cluster.url, **options) as source:  # type: ignore[arg-type]
        # The slot's new position reached disk only at a checkpoint: the mark is undone,
        # unless it was committed to the mark table as well.
        assert numbers(await source.fetch(10)) == after_crash
        await source.mark_relayed(await source.fetch(10))
        await source.drop()
