"""PostgreSQL backends (``postgresql://``), built on psycopg 3 and psycopg-pool.

Install with ``pip install 'tidings[postgres]'``. Each module serves one capability:
`tidings.adapters.postgres.eventstore` holds `PostgresEventStore`.
"""
