"""Example 4: a social feed, CQRS style: relational writes, a Redis read side fed by the log.

The write side stays relational (SQLite here): users, follows, posts. Publishing a post
stores its row and appends a ``social.post.published`` event to the event store. A projection
fans each post out to every follower's feed in Redis (fan-out on write: a sorted set per
reader, newest first, capped), exactly once per post even if the runner crashes. Reading a
feed merges the reader's own latest posts from the write model, so a user who posts and
refreshes sees the post at once, before the projection has caught up.

Run it: ``python examples/04_social_feed.py``. It needs Redis on 127.0.0.1:6379 (or
``$REDIS_URL``) and removes the keys it wrote when it ends.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec

from tidings import EventTypes
from tidings.adapters.redis.projections import RedisReadModel, RedisTx
from tidings.adapters.sqlite.eventstore import SQLiteEventStore
from tidings.errors import BackendUnavailableError
from tidings.eventstore import EventStore
from tidings.projections import Projection, ProjectionRunner, handles

FEED_SIZE = 50
"""Posts kept per feed in Redis; older ones fall off."""
types = EventTypes()


@types.register("social.post.published")
@dataclass(frozen=True)
class PostPublished:
    post_id: str
    author: str
    text: str
    at_ms: int


Post = PostPublished  # a feed entry is the post as published
_post_json = msgspec.json.Encoder()
_post_decoder = msgspec.json.Decoder(Post)


class WriteModel(Protocol):
    """The relational side the feed needs: who follows whom, and a user's own posts."""

    async def add_post(self, post: Post) -> None: ...
    async def followers(self, user: str) -> list[str]: ...
    async def latest_posts(self, user: str, limit: int) -> list[Post]: ...


class SQLiteWriteModel:
    """Users, follows and posts in SQLite (one short connection per call, for brevity)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as conn:
            conn.executescript(
                """CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY);
                CREATE TABLE IF NOT EXISTS follows (follower TEXT, followee TEXT,
                    PRIMARY KEY (follower, followee));
                CREATE TABLE IF NOT EXISTS posts (id TEXT PRIMARY KEY, author TEXT,
                    text TEXT, at_ms INTEGER)"""
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path)

    async def _run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        def work() -> list[tuple[object, ...]]:
            with self._connect() as conn:
                return conn.execute(sql, params).fetchall()

        return await asyncio.to_thread(work)

    async def add_user(self, user: str) -> None:
        await self._run("INSERT OR IGNORE INTO users VALUES (?)", (user,))

    async def follow(self, follower: str, followee: str) -> None:
        await self._run("INSERT OR IGNORE INTO follows VALUES (?, ?)", (follower, followee))

    async def add_post(self, post: Post) -> None:
        row = (post.post_id, post.author, post.text, post.at_ms)
        await self._run("INSERT INTO posts VALUES (?, ?, ?, ?)", row)

    async def followers(self, user: str) -> list[str]:
        rows = await self._run("SELECT follower FROM follows WHERE followee = ?", (user,))
        return [str(row[0]) for row in rows]

    async def latest_posts(self, user: str, limit: int) -> list[Post]:
        sql = (
            "SELECT id, author, text, at_ms FROM posts WHERE author = ? ORDER BY at_ms DESC LIMIT ?"
        )
        return [Post(*row) for row in await self._run(sql, (user, limit))]  # type: ignore[arg-type]


class FeedFanOut(Projection[RedisTx]):
    """Fans each published post out to the feed of every follower of its author."""

    name = "feeds"
    types = types

    def __init__(self, write_model: WriteModel) -> None:
        super().__init__()
        self.write_model = write_model

    @handles(PostPublished)
    async def published(self, post: PostPublished, tx: RedisTx) -> None:
        for follower in await self.write_model.followers(post.author):
            feed = tx.namespaced("feed", follower)
            tx.call("ZADD", feed, post.at_ms, _post_json.encode(post))
            tx.call("ZREMRANGEBYRANK", feed, 0, -(FEED_SIZE + 1))


class Social:
    """The application: commands on the write side, feeds from the read side."""

    def __init__(self, write: WriteModel, store: EventStore, feeds: RedisReadModel) -> None:
        self.write, self.store, self.feeds = write, store, feeds

    async def publish(self, author: str, text: str) -> tuple[Post, int]:
        """Store a post and append its event; return it and its log position."""
        post = Post(uuid.uuid4().hex, author, text, time.time_ns() // 1_000_000)
        await self.write.add_post(post)  # (a transactional outbox would make these one commit)
        event = types.to_event(post, source="/social", subject=author)
        result = await self.store.append(f"user-{author}", [event])
        return post, result.position

    async def read_feed(self, user: str, limit: int = 20) -> list[Post]:
        """Return the newest posts of the people ``user`` follows, merged with their own."""
        key = await self.feeds.namespace(FeedFanOut.name) + f"feed:{user}"
        raw = await self.feeds.client.zrevrange(key, 0, limit - 1)
        merged = {p.post_id: p for p in [*map(_post_decoder.decode, raw)]}
        for own in await self.write.latest_posts(user, limit):
            merged[own.post_id] = own
        return sorted(merged.values(), key=lambda p: (p.at_ms, p.post_id), reverse=True)[:limit]


async def _drop_keys(feeds: RedisReadModel) -> None:
    keys = [key async for key in feeds.client.scan_iter(match=f"{feeds.prefix}:*")]
    if keys:
        await feeds.client.unlink(*keys)


async def demo(
    social: Social, runner: ProjectionRunner, write: SQLiteWriteModel
) -> dict[str, list[str]]:
    """Alice posts; she sees it at once, Bob (a follower) once the projection ran; Dan never."""
    for user in ("alice", "bob", "carol", "dan"):
        await write.add_user(user)
    for follower in ("bob", "carol"):
        await write.follow(follower, "alice")
    _, position = await social.publish("alice", "hello, feed")
    seen = {"alice (at once)": [p.text for p in await social.read_feed("alice")]}
    await runner["feeds"].wait_for(position, timeout=5)  # read-your-own-write, for followers
    for user in ("bob", "carol", "dan"):
        seen[user] = [p.text for p in await social.read_feed(user)]
    for who, texts in seen.items():
        print(f"{who:>16}: {texts}")
    return seen


async def main(folder: Path, redis_url: str) -> dict[str, list[str]]:
    """Run the demo with its files in ``folder`` and its keys in a fresh Redis prefix."""
    write = SQLiteWriteModel(folder / "social.db")
    feeds = RedisReadModel(redis_url, prefix=f"example-{uuid.uuid4().hex[:8]}")
    async with SQLiteEventStore(folder / "events.db") as store, feeds:
        try:
            async with ProjectionRunner(store, feeds, [FeedFanOut(write)]) as runner:
                return await demo(Social(write, store, feeds), runner, write)
        finally:
            await _drop_keys(feeds)


if __name__ == "__main__":
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            asyncio.run(main(Path(tmp), url))
        except BackendUnavailableError as exc:
            sys.exit(f"this example needs Redis at {url}: {exc}")
