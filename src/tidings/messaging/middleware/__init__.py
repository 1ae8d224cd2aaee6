"""Router middleware, one per module, each a function from handler to handler.

`default_middleware` is what `tidings.App` uses when given none::

    [correlation(), dead_letter(after=1), retry(5), timeout(60.0)]

read from the outside in: ids are stamped on what a successful attempt published; when every
attempt failed the event is dead-lettered; each attempt runs at most 60 seconds.
"""

from __future__ import annotations

from tidings.messaging.handlers import Middleware
from tidings.messaging.middleware.correlation import correlation
from tidings.messaging.middleware.dead_letter import dead_letter
from tidings.messaging.middleware.dedupe import dedupe
from tidings.messaging.middleware.retry import retry
from tidings.messaging.middleware.timeout import timeout

__all__ = ["correlation", "dead_letter", "dedupe", "default_middleware", "retry", "timeout"]


def default_middleware() -> list[Middleware]:
    """Return the stack `tidings.App` uses by default (a fresh list: change it freely)."""
    return [correlation(), dead_letter(after=1), retry(5), timeout(60.0)]
