"""The availability probe against a real aiohttp server that fails on demand."""

import asyncio
import threading
import time

import pytest
from aiohttp import web
from chaoslib.exceptions import ActivityFailed

from chaospika._ports import free_port
from chaospika.http.probes import availability


class FlakyServer:
    """An aiohttp server on 127.0.0.1 answering 503 until `fail_until`."""

    def __init__(self):
        self.fail_until = 0.0
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    async def health(self, request):
        if time.monotonic() < self.fail_until:
            return web.json_response({"status": "degraded"}, status=503)
        return web.json_response({"status": "ok"})

    async def moved(self, request):
        raise web.HTTPFound("/health")

    async def slow(self, request):
        await asyncio.sleep(0.5)
        return web.Response(text="late")

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/moved", self.moved)
        app.router.add_get("/slow", self.slow)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        self.loop.run_until_complete(site.start())
        self.ready.set()
        self.loop.run_forever()

    def start(self):
        self.thread.start()
        assert self.ready.wait(10)

    def stop(self):
        future = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        future.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server():
    flaky = FlakyServer()
    flaky.start()
    yield flaky
    flaky.stop()


def test_steady_service_is_fully_available(server):
    result = availability(f"{server.base}/health", duration=1.0, interval=0.1)
    assert result["ratio"] == 1.0 and result["failures"] == 0
    assert result["attempts"] == 11
    assert result["statuses"] == {"200": 11}
    assert result["longest_outage_seconds"] == 0
    assert 0 < result["p95_ms"] < 500


def test_a_half_second_outage_is_measured(server):
    server.fail_until = time.monotonic() + 0.5
    result = availability(f"{server.base}/health", duration=2.0, interval=0.05)

    assert 0.4 <= result["longest_outage_seconds"] <= 0.7
    assert 0.6 <= result["ratio"] <= 0.85
    assert result["statuses"]["503"] == result["failures"] > 5
    assert result["statuses"]["200"] + result["failures"] == result["attempts"]
    assert 30 <= result["attempts"] <= 41


def test_nothing_listening_is_an_outage_for_the_whole_window():
    url = f"http://127.0.0.1:{free_port()}/health"
    result = availability(url, duration=0.5, interval=0.1)
    assert result["ratio"] == 0 and result["statuses"] == {"error": 6}
    assert 0.45 <= result["longest_outage_seconds"] <= 1.0
    assert result["p95_ms"] is None


def test_redirects_are_not_followed_and_expected_status_narrows(server):
    moved = f"{server.base}/moved"
    assert availability(moved, duration=0.2, interval=0.1)["statuses"] == {"302": 3}
    strict = availability(moved, duration=0.2, interval=0.1, expected_status=[200])
    assert strict["ratio"] == 0
    head = availability(
        f"{server.base}/health", duration=0.1, interval=0.1, method="head"
    )
    assert head["statuses"] == {"200": 2}


def test_slow_answers_time_out_and_keep_the_window_bounded(server):
    began = time.monotonic()
    result = availability(
        f"{server.base}/slow", duration=0.5, interval=0.1, timeout=0.2
    )
    assert time.monotonic() - began < 1.5
    assert result["statuses"] == {"error": result["attempts"]} and result["ratio"] == 0
    assert result["attempts"] <= 4


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"url": "ftp://127.0.0.1/"}, "url"),
        ({"url": ""}, "url"),
        ({"url": None}, "url"),
        ({"duration": 0}, "duration"),
        ({"duration": "long"}, "duration"),
        ({"interval": 0}, "interval"),
        ({"interval": -1}, "interval"),
        ({"duration": 3600, "interval": 0.001}, "interval"),
        ({"timeout": 0}, "timeout"),
        ({"expected_status": [200, 999]}, "expected_status"),
        ({"expected_status": "200"}, "expected_status"),
        ({"expected_status": []}, "expected_status"),
        ({"method": "DELETE"}, "method"),
        ({"headers": ["x"]}, "headers"),
    ],
)
def test_bad_arguments_name_the_argument(arguments, argument):
    call = {"url": "http://127.0.0.1:9/health", **arguments}
    with pytest.raises(ActivityFailed, match=f"'{argument}'"):
        availability(**call)
