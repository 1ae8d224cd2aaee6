"""The SQL of the PostgreSQL broker, rendered once per schema so the logic reads without it.

Tables (all prefixed ``tidings_broker_``): a topic has partitions, each with its ``head`` (the
next offset to write); messages are keyed by (topic, partition, offset) and, when they carry
one, unique by (topic, event id). A group has a cursor per partition (the next offset never
delivered), a pending row per offset delivered but not settled (attempt, visible-at, holder,
lease), and members that renew a session while they are alive.

Times are the server's (``clock_timestamp()`` in µs), so every process agrees on deadlines.
Every value is a parameter; table names are quoted by `psycopg.sql.Identifier`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from psycopg import sql

__all__ = ["DDL", "BrokerStatements", "channel"]

NOW_US: Final = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"

DDL: Final = (
    """CREATE TABLE IF NOT EXISTS {topics} (
        topic_id   SERIAL PRIMARY KEY,
        name       TEXT COLLATE "C" NOT NULL UNIQUE,
        partitions INT NOT NULL,
        max_age_us BIGINT,
        max_count  BIGINT)""",
    """CREATE TABLE IF NOT EXISTS {partitions} (
        topic_id  INT NOT NULL,
        partition INT NOT NULL,
        head      BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (topic_id, partition))""",
    """CREATE TABLE IF NOT EXISTS {messages} (
        topic_id        INT NOT NULL,
        partition       INT NOT NULL,
        msg_offset      BIGINT NOT NULL,
        event_id        TEXT COLLATE "C",
        msg_key         TEXT,
        flags           SMALLINT NOT NULL,
        envelope        BYTEA NOT NULL,
        headers         BYTEA,
        published_at_us BIGINT NOT NULL,
        PRIMARY KEY (topic_id, partition, msg_offset))""",
    """CREATE UNIQUE INDEX IF NOT EXISTS tidings_broker_messages_ids
        ON {messages} (topic_id, event_id) WHERE event_id IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS {groups} (
        group_id SERIAL PRIMARY KEY,
        topic_id INT NOT NULL,
        name     TEXT COLLATE "C" NOT NULL,
        UNIQUE (topic_id, name))""",
    """CREATE TABLE IF NOT EXISTS {cursors} (
        group_id    INT NOT NULL,
        partition   INT NOT NULL,
        next_offset BIGINT NOT NULL,
        PRIMARY KEY (group_id, partition))""",
    """CREATE TABLE IF NOT EXISTS {pending} (
        group_id      INT NOT NULL,
        partition     INT NOT NULL,
        msg_offset    BIGINT NOT NULL,
        attempt       INT NOT NULL,
        visible_at_us BIGINT NOT NULL,
        holder        TEXT,
        lease         BIGINT NOT NULL,
        PRIMARY KEY (group_id, partition, msg_offset))""",
    # The claim, server side: one round trip and one commit per claim (see broker_claims).
    """CREATE OR REPLACE FUNCTION {claim}(
        p_group INT, p_topic INT, p_partitions INT, p_member TEXT, p_limit INT, p_lease BIGINT,
        p_deadline_us BIGINT, p_session_us BIGINT, p_start INT,
        p_acked_partitions INT[], p_acked_offsets BIGINT[], p_acked_leases BIGINT[])
    RETURNS TABLE (r_partition INT, r_offset BIGINT, r_attempt INT, r_key TEXT,
                   r_flags SMALLINT, r_envelope BYTEA, r_headers BYTEA, r_now BIGINT,
                   r_due BIGINT)
    LANGUAGE plpgsql AS $claim$
    DECLARE
        v_now BIGINT; v_until BIGINT; v_alive INT; v_share INT;
        v_room INT := p_limit; v_used INT := 0; v_took INT; v_cursor BIGINT;
        v_mine INT[]; v_busy INT[]; v_part INT;
    BEGIN
        PERFORM 1 FROM {groups} WHERE group_id = p_group FOR UPDATE;
        v_now := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
        v_until := v_now + p_deadline_us;
        IF cardinality(p_acked_offsets) > 0 THEN  -- the member's queued acks, first
            DELETE FROM {pending} AS d
            USING unnest(p_acked_partitions, p_acked_offsets, p_acked_leases)
                  AS a(partition, msg_offset, lease)
            WHERE d.group_id = p_group AND d.partition = a.partition
              AND d.msg_offset = a.msg_offset AND d.lease = a.lease;
        END IF;
        INSERT INTO {members} AS m (group_id, member, expires_at_us)
        VALUES (p_group, p_member, v_now + p_session_us)
        ON CONFLICT (group_id, member) DO UPDATE SET expires_at_us = excluded.expires_at_us
        WHERE m.expires_at_us < v_now + p_session_us / 2;  -- renewed when half spent
        SELECT COUNT(*) INTO v_alive FROM {members} AS m
        WHERE m.group_id = p_group AND m.expires_at_us > v_now;
        v_share := (p_partitions + GREATEST(v_alive, 1) - 1) / GREATEST(v_alive, 1);
        SELECT COALESCE(array_agg(DISTINCT d.partition) FILTER (WHERE d.holder = p_member),
                        ARRAY[]::int[]),
               COALESCE(array_agg(DISTINCT d.partition) FILTER (WHERE d.holder <> p_member),
                        ARRAY[]::int[])
        INTO v_mine, v_busy FROM {pending} AS d
        WHERE d.group_id = p_group AND d.holder IS NOT NULL AND d.visible_at_us > v_now;
        FOREACH v_part IN ARRAY v_mine || ARRAY(
            SELECT (p_start + i) % p_partitions FROM generate_series(0, p_partitions - 1) AS i
            WHERE NOT ((p_start + i) % p_partitions = ANY (v_mine || v_busy)) ORDER BY i)
        LOOP
            EXIT WHEN v_used >= v_share OR v_room <= 0;
            RETURN QUERY
                WITH c AS MATERIALIZED (  -- chosen once, not once per pending row
                    SELECT e.msg_offset FROM {pending} AS e
                    WHERE e.group_id = p_group AND e.partition = v_part
                      AND e.visible_at_us <= v_now
                    ORDER BY e.msg_offset LIMIT v_room)
                UPDATE {pending} AS d
                SET attempt = d.attempt + 1, holder = p_member, lease = p_lease,
                    visible_at_us = v_until
                FROM c, {messages} AS m
                WHERE d.group_id = p_group AND d.partition = v_part
                  AND d.msg_offset = c.msg_offset AND m.topic_id = p_topic
                  AND m.partition = v_part AND m.msg_offset = d.msg_offset
                RETURNING d.partition, d.msg_offset, d.attempt, m.msg_key, m.flags,
                          m.envelope, m.headers, NULL::bigint, NULL::bigint;
            GET DIAGNOSTICS v_took = ROW_COUNT;
            v_room := v_room - v_took;
            IF v_room > 0 THEN
                SELECT u.next_offset INTO v_cursor FROM {cursors} AS u
                WHERE u.group_id = p_group AND u.partition = v_part;
                RETURN QUERY
                    WITH fresh AS (
                        SELECT m.msg_offset, m.msg_key, m.flags, m.envelope, m.headers
                        FROM {messages} AS m
                        WHERE m.topic_id = p_topic AND m.partition = v_part
                          AND m.msg_offset >= v_cursor
                        ORDER BY m.msg_offset LIMIT v_room),
                    held AS (
                        INSERT INTO {pending} (group_id, partition, msg_offset, attempt,
                                               visible_at_us, holder, lease)
                        SELECT p_group, v_part, f.msg_offset, 1, v_until, p_member, p_lease
                        FROM fresh AS f),
                    moved AS (
                        UPDATE {cursors} AS u
                        SET next_offset = (SELECT MAX(f.msg_offset) + 1 FROM fresh AS f)
                        WHERE u.group_id = p_group AND u.partition = v_part
                          AND EXISTS (SELECT 1 FROM fresh))
                    SELECT v_part, f.msg_offset, 1, f.msg_key, f.flags, f.envelope,
                           f.headers, NULL::bigint, NULL::bigint
                    FROM fresh AS f ORDER BY f.msg_offset;
                GET DIAGNOSTICS v_cursor = ROW_COUNT;
                v_room := v_room - v_cursor::int;
                v_took := v_took + v_cursor::int;
            END IF;
            IF v_took > 0 OR v_part = ANY (v_mine) THEN
                v_used := v_used + 1;
            END IF;
        END LOOP;
        RETURN QUERY SELECT NULL::int, NULL::bigint, NULL::int, NULL::text, NULL::smallint,
            NULL::bytea, NULL::bytea, v_now,
            (SELECT MIN(d.visible_at_us) FROM {pending} AS d
             WHERE d.group_id = p_group AND d.visible_at_us > v_now);
    END
    $claim$""",
    """CREATE TABLE IF NOT EXISTS {members} (
        group_id      INT NOT NULL,
        member        TEXT NOT NULL,
        expires_at_us BIGINT NOT NULL,
        PRIMARY KEY (group_id, member))""",
)
"""Statements that create the tables; the last table created means all exist."""


@dataclass(frozen=True, slots=True)
class BrokerStatements:
    """Every statement of the broker, as bytes for one schema (see `BrokerStatements.render`)."""

    # -- setup ----------------------------------------------------------------------------
    ddl_lock: bytes = b"SELECT pg_advisory_xact_lock(hashtext('tidings_broker_ddl'))"
    tables_exist: bytes = b"SELECT to_regclass(%s) IS NOT NULL"

    # -- topics ---------------------------------------------------------------------------
    create_topic: bytes = b"""
        WITH t AS (
            INSERT INTO {topics} (name, partitions, max_age_us, max_count)
            VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING
            RETURNING topic_id, partitions, max_age_us, max_count),
        p AS (
            INSERT INTO {partitions} (topic_id, partition)
            SELECT t.topic_id, g FROM t, generate_series(0, t.partitions - 1) AS g)
        SELECT topic_id, partitions, max_age_us, max_count FROM t"""
    topic: bytes = (
        b"SELECT topic_id, partitions, max_age_us, max_count FROM {topics} WHERE name = %s"
    )
    topic_names: bytes = b"SELECT name FROM {topics} WHERE topic_id = ANY(%s)"

    # -- publishing -----------------------------------------------------------------------
    # Row locks in one order, so two publishers to several partitions never deadlock.
    lock_heads: bytes = b"""
        SELECT 1 FROM {partitions}
        WHERE (topic_id, partition) IN (SELECT * FROM unnest(%s::int[], %s::int[]))
        ORDER BY topic_id, partition FOR UPDATE"""
    # Moves each head by its count and inserts the rows at base + index: the head's row lock
    # is held to COMMIT, so a partition's offsets become visible in order, with no holes.
    # Ids and envelopes go in binary (%b): no escaping of every element as text.
    append: bytes = (
        b"""
        WITH heads AS (
            UPDATE {partitions} AS p SET head = p.head + d.n
            FROM unnest(%s::int[], %s::int[], %s::bigint[]) AS d(topic_id, partition, n)
            WHERE p.topic_id = d.topic_id AND p.partition = d.partition
            RETURNING p.topic_id, p.partition, p.head - d.n AS base),
        rows AS (
            INSERT INTO {messages} (topic_id, partition, msg_offset, event_id, msg_key, flags,
                                    envelope, headers, published_at_us)
            SELECT m.topic_id, m.partition, h.base + m.idx, m.event_id, m.msg_key, m.flags,
                   m.envelope, m.headers, """
        + NOW_US.encode()
        + b"""
            FROM unnest(%s::int[], %s::int[], %s::bigint[], %b::text[], %s::text[],
                        %s::smallint[], %b::bytea[], %s::bytea[])
                 AS m(topic_id, partition, idx, event_id, msg_key, flags, envelope, headers)
            JOIN heads AS h ON h.topic_id = m.topic_id AND h.partition = m.partition)
        SELECT topic_id, partition, base FROM heads"""
    )
    stored_ids: bytes = b"""
        SELECT topic_id, event_id, partition, msg_offset FROM {messages}
        WHERE (topic_id, event_id) IN (SELECT * FROM unnest(%s::int[], %s::text[]))"""
    notify: bytes = b"SELECT pg_notify(%s, '')"

    # -- groups and members ---------------------------------------------------------------
    create_group: bytes = b"""
        INSERT INTO {groups} (topic_id, name) VALUES (%s, %s)
        ON CONFLICT (topic_id, name) DO NOTHING RETURNING group_id"""
    group: bytes = b"SELECT group_id FROM {groups} WHERE topic_id = %s AND name = %s"
    # A new group's cursors: at each partition's oldest retained offset, or at its head.
    insert_cursors: bytes = b"""
        INSERT INTO {cursors} (group_id, partition, next_offset)
        SELECT %s, p.partition, CASE WHEN %s THEN p.head ELSE COALESCE(
            (SELECT MIN(m.msg_offset) FROM {messages} m
             WHERE m.topic_id = p.topic_id AND m.partition = p.partition), p.head) END
        FROM {partitions} p WHERE p.topic_id = %s"""
    upsert_member: bytes = (
        b"INSERT INTO {members} (group_id, member, expires_at_us) VALUES (%s, %s, "
        + NOW_US.encode()
        + b" + %s) ON CONFLICT (group_id, member) DO UPDATE SET expires_at_us = "
        b"excluded.expires_at_us"
    )
    delete_member: bytes = b"DELETE FROM {members} WHERE group_id = %s AND member = %s"
    forget_dead_members: bytes = (
        b"DELETE FROM {members} WHERE expires_at_us <= " + NOW_US.encode() + b" - 3600000000"
    )

    # -- claims ---------------------------------------------------------------------------
    # Claims of one group are serialised by its row; settlements need no lock.
    lock_group: bytes = b"SELECT 1 FROM {groups} WHERE group_id = %s FOR UPDATE"
    claim: bytes = (
        b"SELECT * FROM {claim}(%s, %s, %s, %s, %s, %s, %s, %s, %s,"
        b" %s::int[], %s::bigint[], %s::bigint[])"
    )

    # -- settlement -----------------------------------------------------------------------
    ack: bytes = b"""
        DELETE FROM {pending} AS d
        USING unnest(%s::int[], %s::int[], %s::bigint[], %s::bigint[])
              AS a(group_id, partition, msg_offset, lease)
        WHERE d.group_id = a.group_id AND d.partition = a.partition
          AND d.msg_offset = a.msg_offset AND d.lease = a.lease"""
    ack_one: bytes = (
        b"DELETE FROM {pending} WHERE group_id = %s AND partition = %s AND msg_offset = %s"
        b" AND lease = %s"
    )
    # Both move the entry's visible time to "now + %s µs" (nack also frees it).
    nack: bytes = (
        b"UPDATE {pending} SET holder = NULL, visible_at_us = "
        + NOW_US.encode()
        + b" + %s WHERE group_id = %s AND partition = %s AND msg_offset = %s AND lease = %s"
    )
    extend: bytes = (
        b"UPDATE {pending} SET visible_at_us = "
        + NOW_US.encode()
        + b" + %s WHERE group_id = %s AND partition = %s AND msg_offset = %s AND lease = %s"
    )
    release: bytes = (
        b"UPDATE {pending} SET holder = NULL, visible_at_us = "
        + NOW_US.encode()
        + b" WHERE group_id = %s AND holder = %s"
    )
    uncount: bytes = b"""
        UPDATE {pending} AS d SET attempt = d.attempt - 1
        FROM unnest(%s::int[], %s::bigint[], %s::bigint[]) AS u(partition, msg_offset, lease)
        WHERE d.group_id = %s AND d.partition = u.partition AND d.msg_offset = u.msg_offset
          AND d.lease = u.lease"""

    # -- replay and retention -------------------------------------------------------------
    bounds: bytes = b"""
        SELECT p.partition, COALESCE((SELECT MIN(m.msg_offset) FROM {messages} m
               WHERE m.topic_id = p.topic_id AND m.partition = p.partition), p.head), p.head
        FROM {partitions} p WHERE p.topic_id = %s ORDER BY p.partition"""
    first_since: bytes = b"""
        SELECT p.partition, COALESCE((SELECT MIN(m.msg_offset) FROM {messages} m
               WHERE m.topic_id = p.topic_id AND m.partition = p.partition
                 AND m.published_at_us >= %s), p.head)
        FROM {partitions} p WHERE p.topic_id = %s"""
    set_cursor: bytes = (
        b"UPDATE {cursors} SET next_offset = %s WHERE group_id = %s AND partition = %s"
    )
    drop_pending: bytes = b"DELETE FROM {pending} WHERE group_id = %s AND partition = %s"
    # Deletes what is past a topic's count or age, below every group's committed offset
    # (its lowest pending offset, else its cursor).
    expire: bytes = (
        b"""
        DELETE FROM {messages} AS m USING (
            SELECT p.topic_id, p.partition, p.head, t.max_count, t.max_age_us,
                   COALESCE((SELECT MIN(COALESCE((SELECT MIN(d.msg_offset) FROM {pending} d
                                 WHERE d.group_id = c.group_id AND d.partition = c.partition),
                                c.next_offset))
                             FROM {cursors} c JOIN {groups} g ON g.group_id = c.group_id
                             WHERE g.topic_id = p.topic_id AND c.partition = p.partition),
                            p.head) AS keep_from
            FROM {partitions} p JOIN {topics} t ON t.topic_id = p.topic_id
            WHERE t.max_age_us IS NOT NULL OR t.max_count IS NOT NULL) AS r
        WHERE m.topic_id = r.topic_id AND m.partition = r.partition
          AND m.msg_offset < r.keep_from
          AND (m.msg_offset < COALESCE(r.head - r.max_count, -1)
               OR m.published_at_us < COALESCE("""
        + NOW_US.encode()
        + b""" - r.max_age_us, -1))"""
    )

    # -- topic transfer -------------------------------------------------------------------
    read_partition: bytes = b"""
        SELECT msg_offset, msg_key, flags, envelope FROM {messages}
        WHERE topic_id = %s AND partition = %s AND msg_offset >= %s
        ORDER BY msg_offset LIMIT %s"""
    committed: bytes = b"""
        SELECT g.name, c.partition, COALESCE((SELECT MIN(d.msg_offset) FROM {pending} d
               WHERE d.group_id = c.group_id AND d.partition = c.partition), c.next_offset)
        FROM {groups} g JOIN {cursors} c ON c.group_id = g.group_id
        WHERE g.topic_id = %s ORDER BY g.name, c.partition"""

    @classmethod
    def render(cls, schema: str) -> BrokerStatements:
        """Return the statements with the tables of ``schema`` filled in."""
        names = _names(schema)
        return cls(**{f.name: _compose(f.default, names) for f in fields(cls)})


def _names(schema: str) -> dict[str, sql.Composable]:
    tables = ("topics", "partitions", "messages", "groups", "cursors", "pending", "members")
    names = {name: sql.Identifier(schema, f"tidings_broker_{name}") for name in tables}
    return {**names, "claim": sql.Identifier(schema, "tidings_broker_claim")}


def _compose(template: object, names: dict[str, sql.Composable]) -> bytes:
    assert isinstance(template, bytes)
    return sql.SQL(template.decode()).format(**names).as_bytes()


def ddl(schema: str) -> list[bytes]:
    """Return the statements that create the broker's tables in ``schema``."""
    names = _names(schema)
    return [_compose(statement.encode(), names) for statement in DDL]


def channel(schema: str) -> str:
    """Return the NOTIFY channel on which brokers of ``schema`` announce new work."""
    return f"tidings_broker_{schema}"
