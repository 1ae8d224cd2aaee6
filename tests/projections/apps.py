"""Projection apps for the command line tests (URLs come from the environment)."""

from __future__ import annotations

from tests.projections.backends import SQLiteCounter

from tidings.projections import ProjectionApp

app = ProjectionApp([SQLiteCounter(name="totals")])
app_v2 = ProjectionApp([SQLiteCounter(name="totals", version=2)])
not_an_app = 42


def make_app() -> ProjectionApp:
    """An app returned by a function."""
    return app
