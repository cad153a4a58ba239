"""`chaospika load run` from the shell: k6's summary and exit codes."""

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sandbox_fixtures import children, pid_alive

CHAOSPIKA = Path(sys.executable).with_name("chaospika")


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


@pytest.fixture
def url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def spec(url: str, threshold: str) -> dict:
    return {
        "scenarios": {
            "get": {
                "executor": "shared-iterations",
                "vus": 2,
                "iterations": 20,
                "steps": [
                    {
                        "request": {"method": "GET", "url": url},
                        "checks": [{"status": [200]}],
                    }
                ],
            }
        },
        "thresholds": {"http_req_duration": [threshold]},
    }


def run_cli(tmp_path: Path, payload: dict, *extra: str):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(payload))
    return subprocess.run(
        [str(CHAOSPIKA), "load", "run", str(path), "--quiet", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_passing_thresholds_exit_0_with_a_summary_export(url, tmp_path):
    export = tmp_path / "summary.json"
    done = run_cli(tmp_path, spec(url, "p(95)<5000"), "--summary-export", str(export))
    assert done.returncode == 0, done.stderr
    assert "http_reqs" in done.stdout and "✓ 'p(95)<5000'" in done.stdout
    metrics = json.loads(export.read_text())["metrics"]
    assert metrics["http_reqs"]["count"] == 20
    assert metrics["checks"]["passes"] == 20


def test_failed_thresholds_exit_99_like_k6(url, tmp_path):
    done = run_cli(tmp_path, spec(url, "max<0"))
    assert done.returncode == 99
    assert "✗ 'max<0'" in done.stdout


def test_an_invalid_spec_exits_104_naming_the_field(tmp_path):
    done = run_cli(tmp_path, {"scenarios": {"a": {"executor": "warp"}}})
    assert done.returncode == 104
    assert "scenarios.a.executor" in done.stderr


# -- nothing outlives the run: signals, caps, time limits ----------------------------


class Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests = 0

    def do_GET(self):
        type(self).requests += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def counting():
    class Handler(Counting):
        requests = 0

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Handler, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def workers_spec(url: str, duration: str = "60s") -> dict:
    return {
        "processes": 2,
        "scenarios": {
            "get": {
                "executor": "constant-arrival-rate",
                "rate": 100,
                "duration": duration,
                "preAllocatedVUs": 4,
                "steps": [{"request": {"method": "GET", "url": url}}],
            }
        },
    }


def gone_within(pids: list[int], seconds: float) -> float:
    """Seconds until none of `pids` is alive; fails, naming them, after `seconds`."""
    started = time.monotonic()
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < started + seconds:
        time.sleep(0.02)
    left = [
        Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        for pid in pids
        if pid_alive(pid)
    ]
    assert not left, left
    return time.monotonic() - started


def start_cli(tmp_path: Path, payload: dict, *extra: str) -> subprocess.Popen:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(payload))
    return subprocess.Popen(
        [str(CHAOSPIKA), "load", "run", str(path), "--quiet", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_traffic(handler, process: subprocess.Popen, at_least: int = 30) -> None:
    deadline = time.monotonic() + 60
    while handler.requests < at_least:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the load never started"
        time.sleep(0.05)


def assert_quiet(handler, seconds: float = 1.0) -> None:
    before = handler.requests
    time.sleep(seconds)
    assert handler.requests == before, "requests still arrive"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_of_the_parent_ends_its_worker_processes(counting, tmp_path):
    handler, url = counting
    process = start_cli(tmp_path, workers_spec(url))
    try:
        wait_for_traffic(handler, process)
        workers = children(process.pid)
        assert len(workers) >= 2, workers
        process.kill()
        process.wait(10)
        took = gone_within(workers, 10)
        assert took < 2.0, f"workers outlived their parent by {took:.1f} s"
        time.sleep(0.2)  # requests in flight at the kill
        assert_quiet(handler)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_workers_and_prints_the_summary(counting, tmp_path, number):
    handler, url = counting
    process = start_cli(tmp_path, workers_spec(url))
    try:
        wait_for_traffic(handler, process)
        workers = children(process.pid)
        process.send_signal(number)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 105, err  # k6's exit code of an external abort
    assert "http_reqs" in out and "stopping the load" in err
    gone_within(workers, 2.0)
    assert_quiet(handler)


def test_max_duration_always_ends_the_run(counting, tmp_path):
    _, url = counting
    started = time.monotonic()
    done = run_cli(tmp_path, workers_spec(url, "60s"), "--max-duration", "3")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert took < 30, took  # 3 s plus the workers' start (spawned interpreters)
    assert "http_reqs" in done.stdout


def test_too_many_vus_exit_104_naming_the_option_and_the_override(tmp_path):
    payload = spec("http://127.0.0.1:9/", "max<1")
    payload["scenarios"]["get"].update(vus=10_000_000, iterations=10_000_000)
    done = run_cli(tmp_path, payload)
    assert done.returncode == 104
    assert "scenarios.get.vus" in done.stderr and "maxVUs" in done.stderr
