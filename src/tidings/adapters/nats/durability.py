"""The warning that JetStream acknowledges writes before they reach the disk.

A JetStream publish ack means the server wrote the message to its file store, that is to the
operating system's page cache; the server fsyncs every ``sync_interval``, two minutes by
default. A crash of the server process loses nothing (the page cache survives it), but a crash
or power loss of the machine loses what was acknowledged since the last sync, which breaks
"nothing is acknowledged before it is durable" on a single server. The cures:

- ``jetstream { sync_interval: always }`` in the server configuration (nats-server 2.10 or
  later): an fsync per write, at a large cost in throughput;
- streams replicated on a cluster of 3 (``num_replicas=3``): an ack then means a quorum of
  servers holds the write, and losing it takes more than one machine.

A client cannot read ``sync_interval``: neither the INFO line nor ``$JS.API.INFO`` carries it.
The monitoring endpoint ``/varz`` does (``jetstream.config.sync_always``, 2.10 and later), so
when the broker is given ``monitor_url`` and the server reports ``sync_always``, there is no
warning. Otherwise `NatsBroker` warns once when it opens, with `NatsDurabilityWarning`;
silence it with ``fsync_ack_warning=False`` (or ``?fsync_ack_warning=false`` in the URL), or
with ``warnings.filterwarnings("ignore", category=NatsDurabilityWarning)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
import warnings
from typing import Final

__all__ = ["NatsDurabilityWarning", "syncs_always", "warn_unless_synced"]

log: Final = logging.getLogger("tidings.nats")


class NatsDurabilityWarning(UserWarning):
    """Emitted when acknowledged NATS writes can be lost in a machine crash."""


def _message(server_version: str) -> str:
    how = (
        "set `jetstream { sync_interval: always }` in the server configuration"
        if not server_version.startswith(("2.9.", "2.8.", "2.7.", "2.6.", "2.2."))
        else f"nats-server {server_version} cannot be told to (sync_interval needs 2.10 or"
        " later): upgrade and set `jetstream { sync_interval: always }`"
    )
    return (
        "NATS JetStream acknowledges a publish once the write is in the operating system's page"
        " cache and fsyncs only every sync_interval (2 minutes by default): a machine crash or"
        " power loss can lose acknowledged events. To sync every write, "
        f"{how}, or replicate streams on a 3-server cluster. Silence this warning with"
        " NatsBroker(..., fsync_ack_warning=False) or ?fsync_ack_warning=false in the URL."
    )


async def warn_unless_synced(server_version: str, monitor_url: str | None) -> None:
    """Warn (and log) that acked writes may be lost, unless the server says it syncs always."""
    if monitor_url is not None and await syncs_always(monitor_url):
        return
    message = _message(server_version)
    log.warning("%s", message)
    warnings.warn(message, NatsDurabilityWarning, stacklevel=4)


async def syncs_always(monitor_url: str) -> bool:
    """Return True when the server's ``/varz`` reports ``sync_always`` (False if unreadable)."""
    try:
        varz = await asyncio.to_thread(_read_varz, monitor_url.rstrip("/") + "/varz")
    except (OSError, ValueError) as exc:
        log.info("could not read %s/varz: %s", monitor_url, exc)
        return False
    config = varz.get("jetstream", {}).get("config", {}) if isinstance(varz, dict) else {}
    return isinstance(config, dict) and config.get("sync_always") is True


def _read_varz(url: str) -> object:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"monitor_url must be http(s), got {url!r}")
    with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 (scheme checked)
        return json.loads(response.read())
