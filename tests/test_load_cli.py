"""`chaospika load run` from the shell: k6's summary and exit codes."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

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
