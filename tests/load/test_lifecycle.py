"""Loads end with their experiment: stops always end, stop_all reaches every run."""

import signal
import socket
import threading
import time

import pytest

from chaospika.load.actions import stop_all_loads
from chaospika.loadengine import lifecycle, run

STOP_BOUND = 5.0  # seconds a stop may take (~50 ms on an idle machine)


class ClosingServer:
    """127.0.0.1 server that accepts connections and closes them at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def closing_server():
    server = ClosingServer()
    yield server
    server.close()


def arrival_spec(port: int, rate: int = 400) -> dict:
    return {
        "scenarios": {
            "hammer": {
                "executor": "constant-arrival-rate",
                "rate": rate,
                "duration": "30s",
                "preAllocatedVUs": 20,
                "maxVUs": 40,
                "gracefulStop": "30s",
                "steps": [
                    {"request": {"url": f"http://127.0.0.1:{port}/", "timeout": "2s"}}
                ],
            }
        }
    }


def start_in_thread(spec: dict, stop_event=None) -> tuple[threading.Thread, list]:
    results: list = []

    def target() -> None:
        try:
            results.append(run(spec, stop_event=stop_event, max_duration=40))
        except BaseException as error:  # noqa: BLE001 - the test reports it
            results.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, results


def test_stopping_an_arrival_rate_load_never_hangs(closing_server):
    """Regression (3.11): a cancel swallowed by wait_for in connect hung the stop."""
    slowest = 0.0
    for attempt in range(50):
        stop = threading.Event()
        thread, results = start_in_thread(arrival_spec(closing_server.port), stop)
        time.sleep(0.05 + (attempt % 5) * 0.03)  # stop at varied moments
        stopped = time.monotonic()
        stop.set()
        thread.join(STOP_BOUND + 10)
        took = time.monotonic() - stopped
        assert not thread.is_alive(), f"stop {attempt} hung"
        assert took < STOP_BOUND, f"stop {attempt} took {took:.1f} s"
        slowest = max(slowest, took)
        result = results[0]
        assert not isinstance(result, BaseException), result
        assert result.stopped_by == "stop_event"
    assert closing_server.accepted > 0
    assert lifecycle.running_loads() == 0


def test_stop_all_loads_stops_every_run_of_the_process(closing_server):
    threads = [
        start_in_thread(arrival_spec(closing_server.port, rate=50)) for _ in range(2)
    ]
    deadline = time.monotonic() + 10
    while lifecycle.running_loads() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert stop_all_loads(timeout=STOP_BOUND) == 2
    for thread, results in threads:
        thread.join(STOP_BOUND)
        assert not thread.is_alive()
        assert results[0].stopped_by == "stop_event"
    assert stop_all_loads() == 0  # nothing left: a no-op


def test_stop_all_loads_is_callable_from_a_signal_handler(closing_server):
    thread, results = start_in_thread(arrival_spec(closing_server.port, rate=50))
    deadline = time.monotonic() + 10
    while lifecycle.running_loads() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    asked = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: asked.append(stop_all_loads()))
    try:
        signal.raise_signal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    thread.join(STOP_BOUND)
    assert asked == [1]
    assert not thread.is_alive() and results[0].stopped_by == "stop_event"
