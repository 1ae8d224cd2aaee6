"""What the Kafka broker supports, and how (the notes say what to expect)."""

from __future__ import annotations

from typing import Final

from tidings.messaging.ports import Capabilities, Operation, Support

__all__ = ["KAFKA_CAPABILITIES"]

_NOTES: Final = {
    Operation.ACK_DEADLINE: (
        "timers in the member holding the partition; a crashed member's events come back when"
        " the coordinator moves its partitions (session_timeout), from the group's committed"
        " offset, which never passes an unsettled event"
    ),
    Operation.EXTEND: "moves the member's timer; the committed offset stays below the event",
    Operation.NACK_DELAY: (
        "held by the member for the delay (Kafka has no per-message nack); the committed offset"
        " stays below the event, so a crash redelivers it at once rather than after the delay"
    ),
    Operation.DEAD_LETTER: "produced to <topic>.dlq (waited for), then acknowledged",
    Operation.DURABLE_OFFSETS: (
        "the group's committed offset is its lowest unsettled offset; a second group"
        " (<group>.tidings-delivered) records how far events were handed out, so a new holder"
        " counts earlier deliveries"
    ),
    Operation.REPLAY_OFFSET: (
        "members of this broker seek and commit; otherwise the offsets are altered by the admin"
        " API, which Kafka allows only while the group has no members"
    ),
    Operation.REPLAY_TIME: "ListOffsets by timestamp (offsets_for_times), then as by offset",
    Operation.IDEMPOTENT_PUBLISH: (
        "the idempotent producer drops its own retries; a republished event id is dropped"
        " against the ids this broker object published (dedup_window per topic), not across"
        " processes"
    ),
    Operation.RETENTION_AGE: (
        "a floor per partition, never above a group's committed offset, below which new groups,"
        " replays and reads do not go; the storage is not reclaimed (Kafka's retention.ms would"
        " delete unsettled events, and Tansu has no DeleteRecords)"
    ),
    Operation.RETENTION_COUNT: "the same floor as retention by age",
}

KAFKA_CAPABILITIES: Final = Capabilities(
    support={
        Operation.FAN_OUT: Support.NATIVE,
        Operation.WORK_SHARING: Support.NATIVE,
        Operation.ORDER_PER_KEY: Support.NATIVE,
        Operation.ACK_DEADLINE: Support.EMULATED,
        Operation.EXTEND: Support.EMULATED,
        Operation.NACK_DELAY: Support.EMULATED,
        Operation.DEAD_LETTER: Support.EMULATED,
        Operation.DURABLE_OFFSETS: Support.NATIVE,
        Operation.REPLAY_OFFSET: Support.NATIVE,
        Operation.REPLAY_TIME: Support.NATIVE,
        Operation.IDEMPOTENT_PUBLISH: Support.EMULATED,
        Operation.RETENTION_AGE: Support.EMULATED,
        Operation.RETENTION_COUNT: Support.EMULATED,
    },
    notes=_NOTES,
)
