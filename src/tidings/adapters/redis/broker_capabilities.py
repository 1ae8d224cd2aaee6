"""What the Redis Streams broker supports, and how (the notes say what to expect)."""

from __future__ import annotations

from typing import Final

from tidings.messaging.ports import Capabilities, Operation, Support

__all__ = ["REDIS_CAPABILITIES"]

_NOTES: Final = {
    Operation.WORK_SHARING: (
        "members of a group share a partition's consumer group, but only one member reads a"
        " partition at a time (the one holding its unsettled entries), with fair shares by"
        " live member sessions"
    ),
    Operation.ORDER_PER_KEY: "one stream per partition; one member reads a partition at a time",
    Operation.ACK_DEADLINE: (
        "a per-group sorted set of deadlines (the PEL's idle time is not used: deadlines are"
        " per subscription and extend takes any length); due entries are re-taken by XCLAIM"
    ),
    Operation.EXTEND: "the entry's deadline in the sorted set moves",
    Operation.NACK_DELAY: "a sorted-set scheduler per group; the entry stays in the PEL",
    Operation.DEAD_LETTER: "XADD to the <topic>.dlq stream and XACK in one Lua script",
    Operation.DURABLE_OFFSETS: (
        "consumer groups and PELs are server state: durable as far as the server's AOF is"
        " (appendonly yes with appendfsync always survives a crash; the broker warns when the"
        " AOF is off)"
    ),
    Operation.REPLAY_OFFSET: "the group's consumer group is recreated at the stream id",
    Operation.REPLAY_TIME: "a binary search on each entry's publish time, then as by offset",
    Operation.IDEMPOTENT_PUBLISH: (
        "a per-topic hash of event ids checked and written with the XADD in one Lua script;"
        " ids are forgotten only when retention removes their events"
    ),
    Operation.RETENTION_AGE: (
        "XTRIM MINID by the broker's retention job, never past a group's lowest pending entry"
        " or cursor"
    ),
    Operation.RETENTION_COUNT: "XTRIM MINID, like retention by age",
}

REDIS_CAPABILITIES: Final = Capabilities(
    support={
        Operation.FAN_OUT: Support.NATIVE,
        Operation.WORK_SHARING: Support.EMULATED,
        Operation.ORDER_PER_KEY: Support.NATIVE,
        Operation.ACK_DEADLINE: Support.EMULATED,
        Operation.EXTEND: Support.EMULATED,
        Operation.NACK_DELAY: Support.EMULATED,
        Operation.DEAD_LETTER: Support.EMULATED,
        Operation.DURABLE_OFFSETS: Support.NATIVE,
        Operation.REPLAY_OFFSET: Support.NATIVE,
        Operation.REPLAY_TIME: Support.EMULATED,
        Operation.IDEMPOTENT_PUBLISH: Support.EMULATED,
        Operation.RETENTION_AGE: Support.EMULATED,
        Operation.RETENTION_COUNT: Support.EMULATED,
    },
    notes=_NOTES,
)
