"""NATS-only behaviour of `NatsBroker`: what the shared broker suite cannot see.

Names, URL options, the fsync warning, and the JetStream mechanics behind the port: partition
leases, the attempt ledger, ack-floor retention, consumer recreation on replay, reconnects.
Needs NATS JetStream on 127.0.0.1:4222 (``scripts/services``); skipped without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tidings.adapters.nats import NatsBroker, NatsDurabilityWarning
from tidings.adapters.nats.naming import escape
from tidings.adapters.nats.options import parse_url
from tidings.errors import ConfigurationError
from tidings.events import Event
from tidings.messaging.ports import Delivery

URL = "nats://127.0.0.1:4222"


def _reachable() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 4222), 1):
        return True
    return False


needs_nats = pytest.mark.skipif(not _reachable(), reason="NATS is not running on 127.0.0.1:4222")


def _topic() -> str:
    return f"nats-test.{uuid.uuid4().hex[:10]}"


def _events(count: int, *, keys: int = 1) -> list[Event]:
    return [
        Event(type="t", source="/test", data={"i": i}, partitionkey=f"k{i % keys}")
        for i in range(count)
    ]


@pytest.fixture
async def broker() -> AsyncIterator[NatsBroker]:
    created = NatsBroker(URL, fsync_ack_warning=False)
    async with created:
        yield created
        for info in created._catalog.known():
            with contextlib.suppress(Exception):
                await created.delete_topic(info.name)


async def _take(sub: AsyncIterator[Delivery], count: int, *, ack: bool = True) -> list[Delivery]:
    out: list[Delivery] = []
    async with asyncio.timeout(20):
        while len(out) < count:
            delivery = await anext(sub)
            out.append(delivery)
            if ack:
                await delivery.ack()
    return out


# -- names and options (no server) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "escaped"),
    [("orders", "orders"), ("orders.placed", "orders_2Eplaced"), ("a_b", "a_5Fb"), ("é", "_C3_A9")],
)
def test_escape_keeps_letters_and_hex_encodes_the_rest(name: str, escaped: str) -> None:
    assert escape(name) == escaped


def test_escape_is_one_to_one_for_names_that_differ_only_in_separators() -> None:
    names = ["a.b", "a_b", "a-b", "a_2Eb", "a.b.dlq", "x" * 300, "x" * 299 + "y"]
    assert len({escape(name) for name in names}) == len(names)
    assert all(len(escape(name)) <= 120 for name in names)


def test_url_query_sets_options_and_keywords_win() -> None:
    servers, options = parse_url(
        "nats://u:p@h1:4222,h2:4223?lease_ttl=2&fsync_ack_warning=false", {"lease_ttl": 3.0}
    )
    assert servers == ["nats://u:p@h1:4222", "nats://u:p@h2:4223"]
    assert options.lease_ttl == 3.0
    assert options.fsync_ack_warning is False


def test_url_with_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="bogus"):
        parse_url("nats://h?bogus=1", {})


# -- the fsync warning -------------------------------------------------------------------------


@needs_nats
@pytest.mark.nats
async def test_open_warns_that_acked_writes_may_be_lost() -> None:
    with pytest.warns(NatsDurabilityWarning, match="sync_interval"):
        async with NatsBroker(URL):
            pass


@needs_nats
@pytest.mark.nats
@pytest.mark.parametrize("url", [URL + "?fsync_ack_warning=false", URL])
async def test_open_is_silent_when_the_warning_is_turned_off(url: str) -> None:
    async with NatsBroker(url, fsync_ack_warning=False if url == URL else None):
        pass  # filterwarnings=error turns any warning into a failure


@contextlib.contextmanager
def _varz(sync_always: bool) -> Iterator[str]:
    body = json.dumps({"jetstream": {"config": {"sync_always": sync_always}}}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@needs_nats
@pytest.mark.nats
async def test_no_warning_when_varz_reports_sync_always() -> None:
    with _varz(sync_always=True) as monitor:
        async with NatsBroker(URL, monitor_url=monitor):
            pass


@needs_nats
@pytest.mark.nats
async def test_warning_when_varz_reports_interval_sync() -> None:
    with _varz(sync_always=False) as monitor, pytest.warns(NatsDurabilityWarning):
        async with NatsBroker(URL, monitor_url=monitor):
            pass
