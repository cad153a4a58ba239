"""Fixtures of the fault proxy tests: the API in-process, an HTTP backend, clients."""

from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from proxy_helpers import pattern, serving

from chaospika.network.server import ProxyServerThread


class _Backend(BaseHTTPRequestHandler):
    """GET /bytes/N: N pattern bytes; HTTP/1.0, so the server closes after it."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        size = (
            int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/bytes/") else 4
        )
        body = pattern(size)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy_api() -> Iterator[str]:
    """The proxy API on a free loopback port (its own thread and loop)."""
    server = ProxyServerThread("127.0.0.1:0")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def http_backend() -> Iterator[str]:
    """A tiny HTTP server (``host:port``) answering GET /bytes/N."""
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _Backend)) as address:
        yield address


@pytest.fixture
def make_proxy(proxy_api: str) -> Callable[[str, str], int]:
    """make_proxy(name, upstream) -> the port the new proxy listens on."""

    def make(name: str, upstream: str) -> int:
        body = {"name": name, "upstream": upstream, "listen": "127.0.0.1:0"}
        answer = requests.post(f"{proxy_api}/proxies", json=body, timeout=5)
        assert answer.status_code == 201, answer.text
        return int(answer.json()["listen"].rsplit(":", 1)[1])

    return make


@pytest.fixture
def add_toxic(proxy_api: str) -> Callable[..., dict]:
    """add_toxic(proxy, type, stream="downstream", toxicity=1.0, **attributes)."""

    def add(
        proxy: str,
        kind: str,
        stream: str = "downstream",
        toxicity: float = 1.0,
        **attributes: float,
    ) -> dict:
        body = {
            "type": kind,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        answer = requests.post(
            f"{proxy_api}/proxies/{proxy}/toxics", json=body, timeout=5
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    return add
