"""What the ``tidings projections`` commands run: user projections, found by ``module:attr``.

Projections are user code, so the command line imports them, like ``uvicorn module:app``::

    # myapp/views.py
    app = ProjectionApp(
        [OrderTotals(), CustomerSummary()],
        eventstore="sqlite:///events.db",
        read_model="sqlite:///views.db",
    )

    $ tidings projections status --app myapp.views:app
    $ tidings projections rebuild order_totals --app myapp.views:app

The attribute may also be a list of projections (the URLs then come from options or the
environment) or a function returning either.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tidings.errors import ConfigurationError
from tidings.projections.projector import Projection

__all__ = ["ProjectionApp", "load_app"]


@dataclass(frozen=True)
class ProjectionApp:
    """Projections with the event store they read and the read model they write.

    Attributes:
        projections: The projections (each name once).
        eventstore: The event store URL (None: ``--url`` or the environment).
        read_model: The read model URL (None: ``--read-model`` or the environment).
    """

    projections: Sequence[Projection[Any]]
    eventstore: str | None = None
    read_model: str | None = None

    def projection(self, name: str) -> Projection[Any]:
        """Return the projection named ``name``."""
        for projection in self.projections:
            if projection.name == name:
                return projection
        known = ", ".join(p.name for p in self.projections) or "none"
        raise ConfigurationError(f"no projection named {name!r} (known: {known})")


def load_app(spec: str) -> ProjectionApp:
    """Import ``module:attr`` and return it as a `ProjectionApp`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app {spec!r}: expected 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"--app {spec!r}: cannot import {module_name}: {exc}") from exc
    found = getattr(module, attribute, None)
    if found is None:
        raise ConfigurationError(f"--app {spec!r}: {module_name} has no {attribute!r}")
    return _as_app(found() if callable(found) and not isinstance(found, ProjectionApp) else found)


def _as_app(found: object) -> ProjectionApp:
    if isinstance(found, ProjectionApp):
        return found
    if isinstance(found, Sequence) and all(isinstance(p, Projection) for p in found):
        return ProjectionApp(list(found))
    raise ConfigurationError(
        f"--app must name a ProjectionApp or a list of projections, not {type(found).__name__}"
    )
