"""Redis adapters (``redis://``): needs ``pip install 'tidings[redis]'``.

`translate_errors` is the one place where redis-py exceptions become tidings errors; every
public method of the Redis adapters runs its driver calls inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

from tidings.errors import BackendError, BackendUnavailableError, ConfigurationError

try:
    import redis.asyncio  # noqa: F401
    from redis import exceptions as _redis_errors
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigurationError(
        "the redis backend needs redis-py: pip install 'tidings[redis]'", extra="redis"
    ) from exc

__all__ = ["BACKEND", "translate_errors"]

BACKEND: Final = "redis"


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Raise redis-py errors as `BackendError` (`BackendUnavailableError` when unreachable)."""
    try:
        yield
    except (_redis_errors.ConnectionError, _redis_errors.TimeoutError) as exc:
        raise BackendUnavailableError(str(exc) or type(exc).__name__, backend=BACKEND) from exc
    except _redis_errors.RedisError as exc:
        raise BackendError(str(exc) or type(exc).__name__, backend=BACKEND) from exc
