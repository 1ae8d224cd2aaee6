"""How topics and groups map to JetStream stream, subject and consumer names.

NATS names may not hold ``.``, ``*``, ``>``, whitespace or path separators, and subject tokens
may not hold dots, so a topic or group name is *escaped* before use: ASCII letters, digits and
``-`` stay as they are; every other character becomes ``_`` and the two upper-case hex digits
of each of its UTF-8 bytes (``orders.placed`` -> ``orders_2Eplaced``, ``a_b`` -> ``a_5Fb``).
The mapping is deterministic and one-to-one, so two topics never share a stream. A name whose
escape would exceed 120 characters keeps its first 100 and ends in ``_h`` plus 16 hex digits of
its SHA-256 (``_h`` never comes out of escaping, whose ``_`` is always followed by hex digits).

Per topic ``T`` with ``N`` partitions (``E`` = escape(T)):

- stream ``tidings_E_p<n>`` for each partition n, capturing the one subject ``tidings.t.E.<n>``;
- per group ``G``, a durable pull consumer named escape(G) on each partition stream;
- partition leases and group membership in the stream ``tidings_groups``, on subjects
  ``tidings.group.E.escape(G).p.<n>`` and ``tidings.group.E.escape(G).m.<member>``;
- rebalance nudges (core NATS, not stored) on ``tidings.nudge.E.escape(G)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

__all__ = [
    "GROUP_STREAM",
    "GROUP_SUBJECTS",
    "STREAM_PREFIX",
    "GroupNames",
    "TopicNames",
    "escape",
]

STREAM_PREFIX: Final = "tidings_"
GROUP_STREAM: Final = "tidings_groups"
GROUP_SUBJECTS: Final = "tidings.group.>"
_KEEP: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_MAX_ESCAPED: Final = 120
_HASHED_PREFIX: Final = 100


def escape(name: str) -> str:
    """Return ``name`` as a NATS-safe token (one-to-one; see the module docstring)."""
    if not name:
        raise ValueError("a topic or group name must not be empty")
    out = "".join(c if c in _KEEP else _hex(c) for c in name)
    if len(out) <= _MAX_ESCAPED:
        return out
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{out[:_HASHED_PREFIX]}_h{digest}"


def _hex(char: str) -> str:
    return "".join(f"_{byte:02X}" for byte in char.encode())


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The JetStream names of one topic."""

    topic: str
    token: str

    @classmethod
    def of(cls, topic: str) -> TopicNames:
        """Return the names for a topic."""
        return cls(topic, escape(topic))

    def stream(self, partition: int) -> str:
        """Return the stream that holds one partition."""
        return f"{STREAM_PREFIX}{self.token}_p{partition}"

    def subject(self, partition: int) -> str:
        """Return the subject events of one partition are published to."""
        return f"tidings.t.{self.token}.{partition}"

    def group(self, group: str) -> GroupNames:
        """Return the names of one group on this topic."""
        return GroupNames(self, group, escape(group))


@dataclass(frozen=True, slots=True)
class GroupNames:
    """The JetStream names of one group on one topic."""

    topic: TopicNames
    group: str
    consumer: str

    @property
    def _lease_prefix(self) -> str:
        return f"tidings.group.{self.topic.token}.{self.consumer}"

    def lease(self, partition: int) -> str:
        """Return the subject holding the lease of one partition."""
        return f"{self._lease_prefix}.p.{partition}"

    def member(self, member_id: str) -> str:
        """Return the subject of one member's heartbeat."""
        return f"{self._lease_prefix}.m.{member_id}"

    @property
    def members(self) -> str:
        """Return the wildcard subject of every member's heartbeat."""
        return f"{self._lease_prefix}.m.*"

    @property
    def nudge(self) -> str:
        """Return the core subject members publish to when the group should rebalance now."""
        return f"tidings.nudge.{self.topic.token}.{self.consumer}"
