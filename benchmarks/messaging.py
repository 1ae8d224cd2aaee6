"""The messaging benchmark: brokers publishing and consuming, next to their raw drivers.

SQLite cases (`benchmarks._messaging_sqlite`): `SQLiteBroker` against raw sqlite3 doing the
same inserts and selects on the same tables. NATS cases (`benchmarks._messaging_nats`), when
that module is present: `NatsBroker` against raw nats-py and FastStream; skipped without a
server. Latency is not a rate, so it is not one of the cases: ``python -m benchmarks.messaging``
prints the publish-to-handler latency of `SQLiteBroker` at a steady 1,000 events/s.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Final

from benchmarks._messaging_sqlite import measure_latency, measure_raw_latency, sqlite_cases
from benchmarks.api import Cases

PACKAGES: Final = ("msgspec",)

CASES = Cases()
for case in sqlite_cases():
    CASES.append(case)

for _backend in ("nats", "postgres", "redis", "kafka"):
    # Each backend's cases live in `benchmarks._messaging_<backend>`: PACKAGES, <backend>_cases().
    try:
        _module = importlib.import_module(f"benchmarks._messaging_{_backend}")
    except ImportError as exc:  # that part is optional (its driver or module is missing)
        if exc.name not in (f"benchmarks._messaging_{_backend}", None) and not str(
            exc.name
        ).startswith(("nats", "psycopg", "redis", "confluent_kafka", "aiokafka", "faststream")):
            raise
        continue
    PACKAGES = (*PACKAGES, *_module.PACKAGES)  # type: ignore[misc]
    for case in getattr(_module, f"{_backend}_cases")():
        CASES.append(case)


def main() -> None:
    """Print the latency figures: tidings at a steady 1,000 events/s, and the raw floor."""
    ours = asyncio.run(measure_latency(rate=1_000, seconds=5.0))
    floor = measure_raw_latency()
    print("publish-to-handler latency, SQLiteBroker at a steady 1,000 events/s (ms):")
    for name, figures, note in (
        ("tidings", ours, f"{ours.rate:.0f} events/s reached"),
        ("raw", floor, "sqlite3: commit one insert, then one claim"),
    ):
        print(
            f"  {name:8} p50 {figures.p50:6.2f}  p99 {figures.p99:6.2f}  max {figures.max:6.2f}",
            note,
        )


if __name__ == "__main__":
    main()
