"""Is a backend reachable? One small probe per URL scheme, used by ``tidings doctor``."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from tidings.adapters.sqlite.connection import path_from_url
from tidings.urls import EXTRAS, scheme_of

__all__ = ["EXTRA_MODULES", "LOCAL_URLS", "Probe", "installed_extras", "probe"]

EXTRA_MODULES: Final[dict[str, tuple[str, ...]]] = {
    "postgres": ("psycopg", "psycopg_pool"),
    "nats": ("nats",),
    "kafka": ("confluent_kafka",),
    "redis": ("redis",),
    "avro": ("fastavro",),
    "crypto": ("cryptography",),
    "web": ("starlette", "uvicorn"),
}
"""Extra -> the modules it installs."""

LOCAL_URLS: Final = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "redis://127.0.0.1:6379/0",
    "nats://127.0.0.1:4222",
    "kafka://127.0.0.1:9092",
)
"""Where the services run on a developer machine (see scripts/services)."""

_TIMEOUT: Final = 3.0


@dataclass(frozen=True, slots=True)
class Probe:
    """The result of probing one URL."""

    url: str
    ok: bool
    detail: str
    millis: float


def installed_extras() -> dict[str, bool]:
    """Return, for each optional extra, whether all of its modules can be imported."""
    return {
        extra: all(importlib.util.find_spec(m) is not None for m in modules)
        for extra, modules in EXTRA_MODULES.items()
    }


async def probe(url: str) -> Probe:
    """Connect to the service behind a URL and report whether it answered."""
    started = time.perf_counter()
    try:
        check = _CHECKS[scheme_of(url)]
    except KeyError:
        return Probe(url, False, "unknown scheme", 0.0)
    try:
        detail = await asyncio.wait_for(check(url), timeout=_TIMEOUT)
    except ImportError:
        extra = EXTRAS.get(scheme_of(url), "?")
        return Probe(url, False, f"driver missing: pip install 'tidings[{extra}]'", 0.0)
    except Exception as exc:  # a probe reports every failure instead of raising it
        return Probe(url, False, f"{type(exc).__name__}: {exc}".strip(), _since(started))
    return Probe(url, True, detail, _since(started))


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def _memory(url: str) -> str:
    return "in-process"


async def _sqlite(url: str) -> str:
    import sqlite3

    path = path_from_url(url)
    where = path.resolve()
    if not path.exists():
        return f"{where} (will be created; sqlite {sqlite3.sqlite_version})"
    return f"{where} (sqlite {sqlite3.sqlite_version})"


async def _postgres(url: str) -> str:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as conn:
        cur = await conn.execute("SHOW server_version")
        version = (await cur.fetchone() or ("?",))[0]
        cur = await conn.execute("SHOW wal_level")
        wal = (await cur.fetchone() or ("?",))[0]
    return f"PostgreSQL {version}, wal_level={wal}"


async def _redis(url: str) -> str:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=3)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return f"Redis {info.get('redis_version', '?')}"


async def _nats(url: str) -> str:
    import nats

    conn = await nats.connect(url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        info = conn._server_info  # the INFO the server sent on connect
        js = "JetStream on" if info.get("jetstream") else "JetStream OFF"
        return f"NATS {info.get('version', '?')}, {js}"
    finally:
        await conn.close()


async def _kafka(url: str) -> str:
    import confluent_kafka.admin

    parts = urlsplit(url)
    # librdkafka retries and logs forever on a refused port: ask the socket first.
    _, writer = await asyncio.open_connection(parts.hostname, parts.port or 9092)
    writer.close()
    await writer.wait_closed()
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": parts.netloc, "log_level": 0})
    metadata = await asyncio.to_thread(admin.list_topics, timeout=3)
    return f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)"


_CHECKS: Final[dict[str, Callable[[str], Awaitable[str]]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "redis": _redis,
    "nats": _nats,
    "kafka": _kafka,
}
