"""The CQRS feed: relational writes (SQLite, PostgreSQL), a Redis feed fed by a projection."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests.projections.backends import POSTGRES_URL, REDIS_URL, delete_prefixes, fetch

from tidings.adapters.postgres.eventstore import PostgresEventStore
from tidings.adapters.redis.projections import RedisReadModel
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.eventstore.base import StoreBase
from tidings.projections import ProjectionRunner

pytestmark = pytest.mark.redis
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "04_social_feed.py"


def _example() -> ModuleType:
    name = "example_04_social_feed"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        assert spec is not None
        assert spec.loader is not None
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


class PostgresWriteModel:
    """The feed's write side in PostgreSQL: users, follows and posts in one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    async def create(self) -> None:
        s = self.schema
        await fetch(f'CREATE SCHEMA "{s}"')
        await fetch(f'CREATE TABLE "{s}".follows (follower TEXT, followee TEXT)')
        await fetch(f'CREATE TABLE "{s}".posts (id TEXT, author TEXT, text TEXT, at_ms BIGINT)')

    async def follow(self, follower: str, followee: str) -> None:
        await fetch(f"INSERT INTO \"{self.schema}\".follows VALUES ('{follower}', '{followee}')")

    async def add_post(self, post: Any) -> None:
        import psycopg

        sql = f'INSERT INTO "{self.schema}".posts VALUES (%s, %s, %s, %s)'
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(sql, (post.post_id, post.author, post.text, post.at_ms))  # type: ignore[arg-type]

    async def followers(self, user: str) -> list[str]:
        rows = await fetch(
            f"SELECT follower FROM \"{self.schema}\".follows WHERE followee = '{user}'"
        )
        return [row[0] for row in rows]

    async def latest_posts(self, user: str, limit: int) -> list[Any]:
        rows = await fetch(
            f'SELECT id, author, text, at_ms FROM "{self.schema}".posts'
            f" WHERE author = '{user}' ORDER BY at_ms DESC LIMIT {limit}"
        )
        return [_example().Post(*row) for row in rows]


@pytest.fixture
async def feeds() -> AsyncIterator[RedisReadModel]:
    """A Redis read model under a fresh key prefix, deleted afterwards."""
    model = RedisReadModel(REDIS_URL, prefix=f"feed{uuid.uuid4().hex[:8]}")
    async with model:
        yield model
    await delete_prefixes({model.prefix})


async def test_example_shows_own_post_at_once_and_fans_out_to_followers_only(
    tmp_path: Path,
) -> None:
    seen = await _example().main(tmp_path, REDIS_URL)
    assert seen == {
        "alice (at once)": ["hello, feed"],
        "bob": ["hello, feed"],
        "carol": ["hello, feed"],
        "dan": [],
    }


async def test_own_post_is_read_back_before_any_projection_runs(
    tmp_path: Path, feeds: RedisReadModel
) -> None:
    example = _example()
    write = example.SQLiteWriteModel(tmp_path / "social.db")
    await write.follow("bob", "alice")
    async with SQLiteEventStore(tmp_path / "events.db") as store:
        social = example.Social(write, store, feeds)
        await social.publish("alice", "first")
        alice, bob = await social.read_feed("alice"), await social.read_feed("bob")
    assert ([p.text for p in alice], bob) == (["first"], [])


@pytest.mark.postgres
async def test_postgres_write_side_fans_out_every_post_once_and_caps_feeds(
    feeds: RedisReadModel,
) -> None:
    example, schema = _example(), f"t_{uuid.uuid4().hex}"
    write = PostgresWriteModel(schema)
    try:
        await write.create()
        for follower, followee in [("bob", "alice"), ("bob", "carol"), ("dan", "carol")]:
            await write.follow(follower, followee)
        async with PostgresEventStore(POSTGRES_URL, schema=schema) as store:
            await _publish_and_check(example, write, store, feeds)
    finally:
        await fetch(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _publish_and_check(
    example: ModuleType, write: PostgresWriteModel, store: StoreBase, feeds: RedisReadModel
) -> None:
    social = example.Social(write, store, feeds)
    posted = [await social.publish(a, f"{a} {i}") for i in range(30) for a in ("alice", "carol")]
    async with ProjectionRunner(store, feeds, [example.FeedFanOut(write)]) as runner:
        await runner["feeds"].wait_for(posted[-1][1], timeout=10)
        bob = await social.read_feed("bob", limit=100)
        dan = await social.read_feed("dan", limit=100)
    newest = sorted((p for p, _ in posted), key=lambda p: (p.at_ms, p.post_id), reverse=True)
    assert [p.post_id for p in bob] == [p.post_id for p in newest[: example.FEED_SIZE]]
    assert {p.text for p in dan} == {f"carol {i}" for i in range(30)}
