"""Cancellation that a driver swallowed, raised again.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives just as the awaited
operation completes (CPython gh-86296); drivers that use it (redis-py does) can then return
normally from a call while the calling task is being cancelled. A runner's loop that carried
on would never stop, and whoever awaits it (``aclose``) would hang. Loops and adapters call
`raise_if_cancelling` after such calls: the task has a cancellation request pending that
nobody honoured, so it is honoured here.
"""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelling"]


def raise_if_cancelling() -> None:
    """Raise `asyncio.CancelledError` if the current task was asked to cancel but runs on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
