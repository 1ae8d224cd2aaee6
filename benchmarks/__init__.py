"""tidings benchmarks: ``python -m benchmarks [NAME...]``; see benchmarks/README.md.

Each module here other than the harness (`api`, `runner`, `report`, `plots`) is a benchmark
and declares its cases in a module-level ``CASES`` (see `benchmarks.api`).
"""
