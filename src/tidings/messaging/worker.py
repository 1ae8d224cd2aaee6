"""Running an app as a process: load it by name, run it until a signal, drain, exit.

``tidings worker shop.billing:app`` imports ``shop.billing`` (the current directory is on the
import path, as for ``python -m``), takes its ``app`` (a `tidings.App`, or a function that
returns one) and runs it. On SIGTERM or SIGINT the app stops taking deliveries, lets running
handlers finish (at most the drain timeout; then they are cancelled) and leaves everything else
unsettled, so the broker hands it to another member of the group or to the next run.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from tidings.errors import ConfigurationError
from tidings.messaging.router import App, AppStats

__all__ = ["STOP_SIGNALS", "load_app", "serve"]

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def load_app(spec: str) -> App:
    """Return the app named ``"module:attribute"`` (an `App` or a function returning one).

    Raises:
        ConfigurationError: the spec is malformed, the module or attribute is missing, or it
            is not an app.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"name the app as module:attribute, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: object = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load {spec}: {exc}") from exc
    if not isinstance(found, App) and callable(found):
        found = found()
    if not isinstance(found, App):
        raise ConfigurationError(f"{spec} is a {type(found).__name__}, not a tidings.App")
    return found


async def serve(app: App, *, say: Callable[[str], object] = print) -> AppStats:
    """Run ``app`` until SIGTERM or SIGINT, then drain it; return what it did.

    ``say`` gets one line when the app is ready, one when a signal arrives and one at the end.
    """
    topics = ", ".join(app.topics)
    with _stop_on_signals(app, say):
        await app.run(on_ready=lambda: say(f"ready: group {app.group} on {topics}"))
    stats = app.stats
    say(
        f"stopped: {stats.acked} acked, {stats.rejected} rejected, {stats.nacked} nacked,"
        f" {stats.interrupted + stats.cancelled} left unsettled"
    )
    return stats


@contextmanager
def _stop_on_signals(app: App, say: Callable[[str], object]) -> Iterator[None]:
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        say(f"{sig.name}: draining (at most {app.drain_timeout:g} s)")
        app.stop()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
