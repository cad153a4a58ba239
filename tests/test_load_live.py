"""A background load answers `captured` live: what it captured so far, then everything."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chaospika.load.actions import run_load, stop_load
from chaospika.load.probes import captured
from chaospika.load.session import get_session


class OrderServer(ThreadingHTTPServer):
    """POST /orders answers {"order_id": "o<n>"}, n counting from 1."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Orders)
        self.lock = threading.Lock()
        self.issued: list[str] = []

    def new_id(self) -> str:
        with self.lock:
            self.issued.append(f"o{len(self.issued) + 1}")
            return self.issued[-1]


class _Orders(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"order_id": self.server.new_id()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    server = OrderServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def order_spec(url: str, processes: int = 1) -> dict:
    return {
        "processes": processes,
        "scenarios": {
            "orders": {
                "executor": "constant-vus",
                "vus": 2,
                "duration": "30s",
                "steps": [
                    {
                        "request": {"method": "POST", "url": url, "json": {"n": 1}},
                        "captures": [{"name": "order_id", "jsonpath": "$.order_id"}],
                    },
                    {"think": "20ms"},
                ],
            }
        },
    }


def wait_for(name: str, more_than: int, timeout: float = 20.0) -> list:
    """`captured` polled until it holds more than `more_than` values."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = captured(name, "order_id")
        if len(values) > more_than:
            return values
        time.sleep(0.2)
    raise AssertionError(f"load {name!r}: no more than {more_than} captures")


def background(spec: dict, name: str) -> threading.Thread:
    """run_load on a thread, as Chaos Toolkit runs a `"background": true` action."""
    worker = threading.Thread(target=run_load, kwargs={"spec": spec, "name": name})
    worker.start()
    deadline = time.monotonic() + 10
    while get_session(name) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return worker


@pytest.mark.parametrize("processes", [1, 2])
def test_captured_is_live_during_a_background_load(server, processes):
    name = f"live-{processes}"
    url = f"http://127.0.0.1:{server.server_address[1]}/orders"
    worker = background(order_spec(url, processes), name)
    try:
        first = wait_for(name, 0)
        assert get_session(name).done.is_set() is False  # read while it runs
        second = wait_for(name, len(first))
        assert get_session(name).done.is_set() is False
        assert set(first) < set(second)  # it grows
        assert set(second) <= set(server.issued)
        if processes == 1:
            assert second[: len(first)] == first  # in the order captured
    finally:
        summary = stop_load(name)
        worker.join(10)
    assert summary["stopped_by"] == "stop_event"
    final = captured(name, "order_id")
    assert set(second) <= set(final) <= set(server.issued)
    assert len(final) == len(set(final))
    assert final == summary["captures"]["order_id"]
    # at most one request per VU was in flight when the stop interrupted it
    assert len(server.issued) - len(final) <= 2


def test_captured_during_a_load_shorter_than_a_tick_is_its_final_list(server):
    url = f"http://127.0.0.1:{server.server_address[1]}/orders"
    spec = order_spec(url)
    orders = spec["scenarios"]["orders"]
    del orders["duration"]
    orders.update(executor="shared-iterations", vus=1, iterations=5)  # ~0.2 s
    worker = background(spec, "short")
    values = captured("short", "order_id")  # answered at the end: no tick comes
    worker.join(10)
    assert values == captured("short", "order_id") == [f"o{n}" for n in range(1, 6)]


def test_captured_of_a_load_not_started_is_empty():
    assert captured("never-started", "order_id") == []
