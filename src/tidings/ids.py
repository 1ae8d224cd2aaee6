"""Event ids: UUIDv7 (RFC 9562), time-ordered and monotonic within one process.

The first 48 bits are the Unix time in milliseconds, so ids sort by creation time and index
well. Within one millisecond a 12-bit counter (seeded at random) keeps ids increasing; if the
counter overflows, the timestamp is advanced by one millisecond (RFC 9562, section 6.2, method 1
and 3).
"""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID

__all__ = ["new_event_id", "uuid7", "uuid7_time_ms"]

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def _next_timestamp_and_counter() -> tuple[int, int]:
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        if now_ms > _last_ms:
            _last_ms = now_ms
            _counter = int.from_bytes(os.urandom(2)) & 0x7FF  # leave headroom to count up
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
        return _last_ms, _counter


def uuid7() -> UUID:
    """Return a new UUIDv7, greater than every one this process returned before."""
    ms, counter = _next_timestamp_and_counter()
    rand_b = int.from_bytes(os.urandom(8)) & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    return UUID(int=value)


def new_event_id() -> str:
    """Return a new event id: a UUIDv7 in its canonical string form."""
    return str(uuid7())


def uuid7_time_ms(value: UUID | str) -> int:
    """Return the Unix time in milliseconds stored in a UUIDv7."""
    uuid = value if isinstance(value, UUID) else UUID(value)
    if uuid.version != 7:
        raise ValueError(f"{uuid} is not a UUIDv7")
    return uuid.int >> 80
