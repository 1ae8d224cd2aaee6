"""What the NATS JetStream broker supports, and how (the notes say what to expect)."""

from __future__ import annotations

from typing import Final

from tidings.messaging.ports import Capabilities, Operation, Support

__all__ = ["NATS_CAPABILITIES"]

_NOTES: Final = {
    Operation.FAN_OUT: "a durable pull consumer per group on each partition stream",
    Operation.WORK_SHARING: (
        "partitions are leased to members through the tidings_groups stream (JetStream 2.9 has"
        " no exclusive consumers); a crashed member's partitions move after lease_ttl"
    ),
    Operation.ORDER_PER_KEY: "one stream per partition; one member pulls a partition at a time",
    Operation.ACK_DEADLINE: "the consumer's AckWait (the last member to join sets it)",
    Operation.EXTEND: (
        "in-progress ack (+WPI) restarts a whole AckWait; longer extensions repeat it"
    ),
    Operation.NACK_DELAY: "NakWithDelay (-NAK with a delay)",
    Operation.DEAD_LETTER: (
        "published to the <topic>.dlq streams and acknowledged there before +TERM; max_deliver"
        " moves events the same way (the server's MaxDeliver only emits an advisory)"
    ),
    Operation.DURABLE_OFFSETS: "the durable consumer's ack floor, in file storage",
    Operation.REPLAY_OFFSET: "the group's consumer is recreated at the stream sequence",
    Operation.REPLAY_TIME: "the group's consumer is recreated with OptStartTime",
    Operation.IDEMPOTENT_PUBLISH: (
        "Nats-Msg-Id = event id; duplicates are dropped only within the stream's duplicate"
        " window (duplicate_window, 2 minutes by default), and only on the same partition"
    ),
    Operation.RETENTION_AGE: (
        "the broker purges expired events up to the lowest group ack floor; JetStream's MaxAge"
        " is not used because it drops unsettled events"
    ),
    Operation.RETENTION_COUNT: (
        "per partition, like retention by age; JetStream's MaxMsgs would drop unsettled events"
    ),
}

NATS_CAPABILITIES: Final = Capabilities(
    support={
        Operation.FAN_OUT: Support.NATIVE,
        Operation.WORK_SHARING: Support.EMULATED,
        Operation.ORDER_PER_KEY: Support.NATIVE,
        Operation.ACK_DEADLINE: Support.NATIVE,
        Operation.EXTEND: Support.NATIVE,
        Operation.NACK_DELAY: Support.NATIVE,
        Operation.DEAD_LETTER: Support.EMULATED,
        Operation.DURABLE_OFFSETS: Support.NATIVE,
        Operation.REPLAY_OFFSET: Support.NATIVE,
        Operation.REPLAY_TIME: Support.NATIVE,
        Operation.IDEMPOTENT_PUBLISH: Support.NATIVE,
        Operation.RETENTION_AGE: Support.EMULATED,
        Operation.RETENTION_COUNT: Support.EMULATED,
    },
    notes=_NOTES,
)
