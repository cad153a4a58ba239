"""Closed proxied connections are freed by reference counting, not by the cyclic GC."""

import gc
import time
from collections.abc import Iterator

import pytest
from proxy_helpers import body_of, http_get, pattern

from chaospika.network import link
from chaospika.network.client import add_toxic, create_proxy
from chaospika.network.server import ProxyServerThread

LINK_TYPES = (link.Connection, link.Side, link.Direction)


@pytest.fixture
def proxy_server() -> Iterator[ProxyServerThread]:
    server = ProxyServerThread("127.0.0.1:0")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    "toxics",
    [
        [],
        [{"type": "latency", "attributes": {"latency": 5}}],
        [  # not latency-only: the stages' task path
            {"type": "latency", "attributes": {"latency": 5}},
            {"type": "bandwidth", "attributes": {"rate": 10_000}},
        ],
    ],
    ids=["plain", "latency", "latency+bandwidth"],
)
def test_closed_connections_leave_no_reference_cycles(
    proxy_server: ProxyServerThread, http_backend: str, toxics: list[dict]
) -> None:
    listen = create_proxy(proxy_server.url, "cycles", http_backend)["listen"]
    for number, body in enumerate(toxics):
        add_toxic(proxy_server.url, "cycles", {"name": f"t{number}", **body})
    port = int(listen.rsplit(":", 1)[1])
    proxy = proxy_server.server.collection.get("cycles")
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            response, _, _ = http_get(port, 300)
            assert body_of(response) == pattern(300)
        deadline = time.monotonic() + 5.0
        while proxy.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not proxy.connections
        time.sleep(0.2)  # the upstream sides' connection_lost callbacks
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, LINK_TYPES)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cyclic == []
