"""Event ids: UUIDv7, time-ordered and monotonic within one process."""

from __future__ import annotations

import itertools
import threading
import time
import types
import uuid

import pytest

from tidings import ids
from tidings.ids import new_event_id, uuid7, uuid7_time_ms

PAST_MS = 1_700_000_000_000  # 2023-11-14: safely behind the real clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A fake clock for `tidings.ids`: append milliseconds, the next id reads the last one.

    The generator's state is restored afterwards, so ids made later stay close to real time.
    """
    readings = [PAST_MS]
    monkeypatch.setattr(ids, "time", types.SimpleNamespace(time_ns=lambda: readings[-1] * 10**6))
    monkeypatch.setattr(ids, "_last_ms", 0)
    monkeypatch.setattr(ids, "_counter", 0)
    return readings


def test_uuid7_has_version_7() -> None:
    assert uuid7().version == 7


def test_uuid7_has_rfc_9562_variant() -> None:
    assert uuid7().variant == uuid.RFC_4122


def test_new_event_id_is_canonical_uuid_text() -> None:
    value = new_event_id()
    assert str(uuid.UUID(value)) == value


def test_uuid7_is_monotonic_over_many_quick_calls() -> None:
    values = [uuid7() for _ in range(100_000)]
    assert all(a < b for a, b in itertools.pairwise(values))


def test_new_event_id_text_sorts_in_creation_order() -> None:
    values = [new_event_id() for _ in range(10_000)]
    assert values == sorted(values)


def test_uuid7_time_is_close_to_now() -> None:
    before = time.time_ns() // 10**6
    stamped = uuid7_time_ms(uuid7())
    assert before - 5 <= stamped <= time.time_ns() // 10**6 + 5


def test_uuid7_time_ms_reads_text() -> None:
    value = uuid7()
    assert uuid7_time_ms(str(value)) == uuid7_time_ms(value)


def test_uuid7_time_ms_rejects_other_versions() -> None:
    with pytest.raises(ValueError, match="UUIDv7"):
        uuid7_time_ms(uuid.uuid4())


def test_uuid7_is_unique_across_threads() -> None:
    made: list[uuid.UUID] = []

    def work() -> None:
        batch = [uuid7() for _ in range(5_000)]
        made.extend(batch)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 20_000


def test_uuid7_stores_the_clock_time(clock: list[int]) -> None:
    assert uuid7_time_ms(uuid7()) == PAST_MS


def test_uuid7_stays_monotonic_when_the_clock_goes_back(clock: list[int]) -> None:
    first = uuid7()
    clock.append(PAST_MS - 5_000)
    assert uuid7() > first


def test_uuid7_keeps_the_later_time_when_the_clock_goes_back(clock: list[int]) -> None:
    uuid7()
    clock.append(PAST_MS - 5_000)
    assert uuid7_time_ms(uuid7()) == PAST_MS


def test_uuid7_stays_monotonic_when_the_counter_overflows(clock: list[int]) -> None:
    values = [uuid7() for _ in range(10_000)]  # far more than 4096 in one frozen millisecond
    assert all(a < b for a, b in itertools.pairwise(values))


def test_uuid7_advances_the_time_when_the_counter_overflows(clock: list[int]) -> None:
    values = [uuid7() for _ in range(10_000)]
    assert uuid7_time_ms(values[-1]) > PAST_MS
