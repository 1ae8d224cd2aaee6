"""The SQL of the SQLite broker, kept apart so the logic reads without it.

Tables: a topic has partitions, each with its ``head`` (the next offset to write); messages are
keyed by (topic, partition, offset) and, when they carry one, unique by (topic, event id). A
group has a cursor per partition (the next offset never delivered), a pending row per offset
delivered but not settled (attempt, visible-at, holder, lease), and members that renew a
session while they are alive (their number sets each member's fair share of partitions).
"""

from typing import Final

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tidings_topics (
    topic_id   INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    partitions INTEGER NOT NULL,
    max_age_us INTEGER,
    max_count  INTEGER,
    keyless    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tidings_partitions (
    topic_id  INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    head      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic_id, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tidings_messages (
    id              INTEGER PRIMARY KEY,
    topic_id        INTEGER NOT NULL,
    partition       INTEGER NOT NULL,
    msg_offset      INTEGER NOT NULL,
    event_id        TEXT,
    msg_key         TEXT,
    flags           INTEGER NOT NULL,
    envelope        BLOB    NOT NULL,
    headers         BLOB,
    published_at_us INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS tidings_messages_at
    ON tidings_messages (topic_id, partition, msg_offset);
CREATE UNIQUE INDEX IF NOT EXISTS tidings_messages_ids
    ON tidings_messages (topic_id, event_id) WHERE event_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS tidings_groups (
    group_id INTEGER PRIMARY KEY,
    topic_id INTEGER NOT NULL,
    name     TEXT    NOT NULL,
    UNIQUE (topic_id, name)
);
CREATE TABLE IF NOT EXISTS tidings_cursors (
    group_id    INTEGER NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tidings_pending (
    group_id      INTEGER NOT NULL,
    partition     INTEGER NOT NULL,
    msg_offset    INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    visible_at_us INTEGER NOT NULL,
    holder        TEXT,
    lease         INTEGER NOT NULL,
    PRIMARY KEY (group_id, partition, msg_offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tidings_members (
    group_id      INTEGER NOT NULL,
    member        TEXT    NOT NULL,
    expires_at_us INTEGER NOT NULL,
    PRIMARY KEY (group_id, member)
) WITHOUT ROWID;
"""

# -- topics and publishing ------------------------------------------------------------------

TOPIC: Final = (
    "SELECT topic_id, partitions, max_age_us, max_count FROM tidings_topics WHERE name = ?"
)
INSERT_TOPIC: Final = (
    "INSERT INTO tidings_topics (name, partitions, max_age_us, max_count) VALUES (?, ?, ?, ?)"
)
INSERT_PARTITION: Final = "INSERT INTO tidings_partitions (topic_id, partition) VALUES (?, ?)"
HEADS: Final = "SELECT partition, head FROM tidings_partitions WHERE topic_id = ?"
SET_HEAD: Final = "UPDATE tidings_partitions SET head = ? WHERE topic_id = ? AND partition = ?"
KEYLESS: Final = "SELECT keyless FROM tidings_topics WHERE topic_id = ?"
SET_KEYLESS: Final = "UPDATE tidings_topics SET keyless = ? WHERE topic_id = ?"
INSERT_MESSAGE: Final = (
    "INSERT INTO tidings_messages (topic_id, partition, msg_offset, event_id, msg_key, flags,"
    " envelope, headers, published_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
MESSAGE_BY_ID: Final = (
    "SELECT partition, msg_offset FROM tidings_messages WHERE topic_id = ? AND event_id = ?"
)

# -- groups and members ---------------------------------------------------------------------

GROUP: Final = "SELECT group_id FROM tidings_groups WHERE topic_id = ? AND name = ?"
INSERT_GROUP: Final = "INSERT INTO tidings_groups (topic_id, name) VALUES (?, ?)"
LOW_AND_HEAD: Final = (
    "SELECT p.partition, COALESCE((SELECT MIN(m.msg_offset) FROM tidings_messages m"
    " WHERE m.topic_id = p.topic_id AND m.partition = p.partition), p.head), p.head"
    " FROM tidings_partitions p WHERE p.topic_id = ? ORDER BY p.partition"
)
INSERT_CURSOR: Final = (
    "INSERT INTO tidings_cursors (group_id, partition, next_offset) VALUES (?, ?, ?)"
)
UPSERT_MEMBER: Final = (
    "INSERT INTO tidings_members (group_id, member, expires_at_us) VALUES (?, ?, ?)"
    " ON CONFLICT (group_id, member) DO UPDATE SET expires_at_us = excluded.expires_at_us"
)
DELETE_MEMBER: Final = "DELETE FROM tidings_members WHERE group_id = ? AND member = ?"
ALIVE_MEMBERS: Final = (
    "SELECT COUNT(*) FROM tidings_members WHERE group_id = ? AND expires_at_us > ?"
)
FORGET_DEAD_MEMBERS: Final = "DELETE FROM tidings_members WHERE expires_at_us <= ?"

# -- claims -----------------------------------------------------------------------------------

HOLDERS: Final = (
    "SELECT DISTINCT partition, holder FROM tidings_pending"
    " WHERE group_id = ? AND holder IS NOT NULL AND visible_at_us > ?"
)
READY: Final = (
    "SELECT p.msg_offset, p.attempt, m.msg_key, m.flags, m.envelope, m.headers"
    " FROM tidings_pending p JOIN tidings_messages m ON m.topic_id = ?"
    " AND m.partition = p.partition AND m.msg_offset = p.msg_offset"
    " WHERE p.group_id = ? AND p.partition = ? AND p.visible_at_us <= ?"
    " ORDER BY p.msg_offset LIMIT ?"
)
HAND_AGAIN: Final = (
    "UPDATE tidings_pending SET attempt = attempt + 1, holder = ?, lease = ?, visible_at_us = ?"
    " WHERE group_id = ? AND partition = ? AND msg_offset = ?"
)
CURSOR: Final = "SELECT next_offset FROM tidings_cursors WHERE group_id = ? AND partition = ?"
SET_CURSOR: Final = (
    "UPDATE tidings_cursors SET next_offset = ? WHERE group_id = ? AND partition = ?"
)
NEW_MESSAGES: Final = (
    "SELECT msg_offset, msg_key, flags, envelope, headers FROM tidings_messages"
    " WHERE topic_id = ? AND partition = ? AND msg_offset >= ? ORDER BY msg_offset LIMIT ?"
)
INSERT_PENDING: Final = (
    "INSERT INTO tidings_pending (group_id, partition, msg_offset, attempt, visible_at_us,"
    " holder, lease) VALUES (?, ?, ?, 1, ?, ?, ?)"
)
NEXT_DUE: Final = (
    "SELECT MIN(visible_at_us) FROM tidings_pending WHERE group_id = ? AND visible_at_us > ?"
)

# -- settlement -------------------------------------------------------------------------------

_ENTRY: Final = " WHERE group_id = ? AND partition = ? AND msg_offset = ? AND lease = ?"
ACK: Final = "DELETE FROM tidings_pending" + _ENTRY
NACK: Final = "UPDATE tidings_pending SET holder = NULL, visible_at_us = ?" + _ENTRY
EXTEND: Final = "UPDATE tidings_pending SET visible_at_us = ?" + _ENTRY
UNCOUNT: Final = "UPDATE tidings_pending SET attempt = attempt - 1" + _ENTRY
RELEASE: Final = (
    "UPDATE tidings_pending SET holder = NULL, visible_at_us = ? WHERE group_id = ? AND holder = ?"
)

# -- replay and retention ---------------------------------------------------------------------

FIRST_SINCE: Final = (
    "SELECT MIN(msg_offset) FROM tidings_messages"
    " WHERE topic_id = ? AND partition = ? AND published_at_us >= ?"
)
DROP_PENDING: Final = "DELETE FROM tidings_pending WHERE group_id = ? AND partition = ?"
RETAINED_TOPICS: Final = (
    "SELECT topic_id, max_age_us, max_count FROM tidings_topics"
    " WHERE max_age_us IS NOT NULL OR max_count IS NOT NULL"
)
COMMITTED: Final = (
    "SELECT MIN(COALESCE((SELECT MIN(d.msg_offset) FROM tidings_pending d"
    " WHERE d.group_id = c.group_id AND d.partition = c.partition), c.next_offset))"
    " FROM tidings_cursors c JOIN tidings_groups g ON g.group_id = c.group_id"
    " WHERE g.topic_id = ? AND c.partition = ?"
)
EXPIRE: Final = (
    "DELETE FROM tidings_messages WHERE topic_id = ? AND partition = ? AND msg_offset < ?"
    " AND (msg_offset < ? OR published_at_us < ?)"
)
