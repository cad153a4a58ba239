"""The progress reports: the saturation warning (sustained event-loop lag only, not
a single stall), and the line's p(95) and failures against a server failing 25 %."""

import io
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chaospika.load.cli import ProgressLine
from chaospika.loadengine import LoadRun
from chaospika.loadengine.progress import (
    LAG_LIMIT_MS,
    LagMonitor,
    ProgressMeter,
    Totals,
    progress_line,
    wrap_parts,
)
from chaospika.loadengine.registry import Registry


def second_of(monitor: LagMonitor, lags_ms: list[float]) -> None:
    for lag in lags_ms:
        monitor.add(lag)
    monitor.close_second()


def test_one_stall_at_the_start_is_not_saturation():
    monitor = LagMonitor()
    second_of(monitor, [150.0] + [1.0] * 16)  # 10,000 VUs started in one go
    assert monitor.p95_ms() == 150.0  # the live view shows it
    for _ in range(4):
        second_of(monitor, [1.0] * 20)
    assert monitor.worst_p95_ms == 1.0
    assert monitor.sustained_p95_ms == 1.0


def test_a_loop_kept_busy_is_saturation():
    monitor = LagMonitor()
    second_of(monitor, [1.0] * 20)
    second_of(monitor, [40.0] * 14)
    assert monitor.worst_p95_ms == 1.0  # one bad second is not enough
    second_of(monitor, [45.0] * 14)
    assert monitor.sustained_p95_ms == 40.0
    assert monitor.worst_p95_ms == 40.0 > LAG_LIMIT_MS


def test_closing_a_second_without_new_lags_changes_nothing():
    monitor = LagMonitor()
    second_of(monitor, [30.0] * 10)
    monitor.close_second()  # e.g. the run's end right after a tick
    assert monitor.worst_p95_ms == 0.0


def test_progress_warns_on_sustained_lag_only():
    meter = ProgressMeter()
    spike = meter.report(1.0, Totals(lag_p95_ms=150.0, lag_sustained_ms=1.0))
    assert spike["warning"] is None and spike["loop_lag_p95_ms"] == 150.0
    busy = meter.report(2.0, Totals(lag_p95_ms=45.0, lag_sustained_ms=40.0))
    assert "saturated" in busy["warning"] and "40.0 ms" in busy["warning"]


def test_totals_of_processes_keep_the_worst_lags():
    totals = Totals(lag_p95_ms=5.0, lag_sustained_ms=30.0)
    totals.add(Totals(lag_p95_ms=50.0, lag_sustained_ms=2.0))
    assert (totals.lag_p95_ms, totals.lag_sustained_ms) == (50.0, 30.0)


# -- the progress line: p(95) and failures from the run's registry ----------------

SLOW_S = 0.06  # /slow sleeps this long: a quarter of the requests, so p(95) >= it
PATHS = ("ok", "slow", "ok", "fail")  # an iteration's requests: /fail answers 500


class FailingServer(ThreadingHTTPServer):
    """Answers GET /fail with 500, /slow after SLOW_S, anything else at once."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.served = 0
        self.failed = 0

    def count(self, failed: bool) -> None:
        with self.lock:
            self.served += 1
            self.failed += failed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(SLOW_S)
        failed = self.path == "/fail"
        self.server.count(failed)
        self.send_response(500 if failed else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    server = FailingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def failing_spec(url: str, processes: int = 1, duration: str = "3s") -> dict:
    """4 VUs; each iteration's 4th request fails: 25 % of every VU's requests."""
    steps = [
        {
            "request": {"method": "GET", "url": f"{url}{path}"},
            "checks": [{"status": [200]}],
        }
        for path in PATHS
    ]
    return {
        "processes": processes,
        "scenarios": {
            "get": {
                "executor": "constant-vus",
                "vus": 4,
                "duration": duration,
                "steps": [*steps, {"think": "5ms"}],
            }
        },
    }


def registry_view(registry) -> dict:
    """What the report must say, read from the registry in the callback."""
    failed = registry.stats("http_req_failed")
    checks = registry.stats("checks")
    points = registry.series.get("http_req_duration", [])
    return {
        "http_reqs": int(registry.stats("http_reqs")["count"]),
        "http_req_failed": failed["passes"],
        "checks_failed": checks["fails"],
        "p95": points[-1]["p(95)"] if points else None,
        "t": points[-1]["t"] if points else None,
    }


def check_reports(reports: list[tuple[dict, dict]], server: FailingServer) -> None:
    assert len(reports) >= 2, reports
    for report, seen in reports:
        assert report["http_reqs"] == seen["http_reqs"] > 0
        assert report["http_req_failed"] == seen["http_req_failed"]
        assert report["checks_failed"] == seen["checks_failed"]
        assert report["checks"] == report["http_reqs"]  # one check per request
        # every VU's 4th, 8th... request fails: of n requests a VU made, n // 4
        # failed, so the 4 VUs' failures are total / 4 less at most 3 / 4 each
        failed, total = report["http_req_failed"], report["http_reqs"]
        assert 0 <= total / 4 - failed <= 4 * 3 / 4, report
        assert report["http_req_failed_rate"] == round(failed / total, 6)
        # p(95) of the last second: the registry's own point of that second, and
        # at least the delay of the 10 % slow requests
        assert round(seen["t"], 3) == report["elapsed"]
        assert report["http_req_duration_p95_ms"] == round(seen["p95"], 3)
        assert SLOW_S * 1000 <= report["http_req_duration_p95_ms"] < 1000
        line = progress_line(report)
        assert line.startswith(f"running ({report['elapsed']:04.1f}s), ")
        assert f"{report['vus']}/{report['vus_max']} VUs" in line
        assert f"{report['iterations']} complete and 0 interrupted iterations" in line
        assert f"p(95)={report['http_req_duration_p95_ms']:.2f}ms (last 1s)" in line
        rate = f"{report['http_req_failed_rate'] * 100:.2f}%"
        assert f"http_req_failed {rate} {failed} out of {total}" in line
        assert f"checks_failed {failed} out of {total}" in line


def run_and_watch(spec: dict) -> tuple[list, Any]:
    reports = []

    def on_progress(report: dict) -> None:
        # on the engine's thread, right after the tick: the registry is still
        seen = registry_view(load.registry)
        reports.append(({k: v for k, v in report.items() if k != "captures"}, seen))

    load = LoadRun(spec, on_progress=on_progress, max_duration=20)
    return reports, load.run()


def test_progress_reports_p95_and_failures_of_a_failing_server(server):
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    reports, result = run_and_watch(failing_spec(url))
    check_reports(reports, server)
    assert reports[0][0]["vus"] == 4 == reports[0][0]["vus_max"]
    failed = result.registry.stats("http_req_failed")["passes"]
    assert failed == server.failed  # every 500 the server sent was counted


def test_progress_of_several_processes_adds_their_requests_up(server):
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    reports, result = run_and_watch(failing_spec(url, processes=2))
    check_reports(reports, server)
    failed = result.registry.stats("http_req_failed")["passes"]
    assert failed == server.failed
    assert result.registry.stats("http_reqs")["count"] == server.served


def test_a_second_without_requests_has_no_p95():
    registry = Registry()
    registry.add("http_reqs", 1)
    registry.add("http_req_duration", 12.5)
    registry.add("http_req_failed", 0)
    registry.tick(1.0)
    totals = Totals()
    totals.read(registry)
    assert (totals.http_reqs, totals.p95_ms) == (1, 12.5)
    registry.tick(2.0)  # nothing ended in this second
    totals.read(registry)
    assert totals.p95_ms is None
    report = ProgressMeter().report(2.0, totals)
    assert "p(95)=- (last 2s)" in progress_line(report)


def test_the_line_reads_like_k6s():
    report = {
        "elapsed": 72.04,
        "window_s": 1.0,
        "vus": 3,
        "vus_max": 10,
        "iterations": 1204,
        "interrupted_iterations": 2,
        "iterations_per_s": 100.26,
        "dropped_iterations": 5,
        "http_reqs": 2408,
        "rps": 200.5,
        "http_req_duration_p95_ms": 0.56,
        "http_req_failed": 12,
        "http_req_failed_rate": 12 / 2408,
        "checks": 0,
        "checks_failed": 0,
        "warning": None,
    }
    assert progress_line(report) == (
        "running (1m12.0s), 3/10 VUs, 1204 complete and 2 interrupted iterations, "
        "5 dropped, 100.3 iters/s, 200.5 reqs/s, p(95)=560.00µs (last 1s), "
        "http_req_failed 0.50% 12 out of 2408"
    )
    report["http_req_duration_p95_ms"] = 1534.2
    assert "p(95)=1.53s" in progress_line(report)
    report["http_req_duration_p95_ms"] = 0.0  # refused connections only
    assert "p(95)=0s" in progress_line(report)


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_report_rewritten_in_place(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # what shutil.get_terminal_size reads first
    terminal = Terminal()
    show = ProgressLine(terminal)
    meter = ProgressMeter()
    show(meter.report(1.0, Totals(vus=1, vus_max=1, iterations=5)))
    show(meter.report(2.0, Totals(vus=1, vus_max=1, iterations=9)))
    show.end()
    text = terminal.getvalue()
    first, second = text.split("\x1b[1A")  # 80 columns: two rows, back up one
    assert first.startswith("\r\x1b[Jrunning (01.0s)") and first.count("\n") == 1
    rows = second.removeprefix("\r\x1b[J").removesuffix("\n").split("\n")
    assert len(rows) == 2 and all(len(row) < 80 for row in rows)
    again = ProgressMeter()
    again.report(1.0, Totals(vus=1, vus_max=1, iterations=5))
    expected = progress_line(again.report(2.0, Totals(vus=1, vus_max=1, iterations=9)))
    assert " ".join(rows) == expected  # the rows end in "," where the line has ", "
    assert rows[-1].endswith("http_req_failed 0.00% 0 out of 0")
    assert show.rows == 0 and text.endswith("\n")  # end() closed the report
    piped, quiet = io.StringIO(), io.StringIO()
    for stream, flag in ((piped, False), (quiet, True)):
        printer = ProgressLine(stream, quiet=flag)
        printer(meter.report(3.0, Totals(iterations=9)))
        printer(meter.report(4.0, Totals(iterations=9)))
        printer.end()
    assert piped.getvalue().count("\n") == 2 and "\r" not in piped.getvalue()
    assert quiet.getvalue() == ""


def test_parts_wrap_at_commas_within_the_width():
    parts = ["a" * 10, "b" * 10, "c" * 30, "d" * 50]
    rows = wrap_parts(parts, 30)
    assert rows == ["a" * 10 + ", " + "b" * 10 + ",", "c" * 29 + ",", "d" * 29]


def test_the_cli_prints_a_progress_line_a_second(server, tmp_path):
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(failing_spec(url, duration="2s")))
    done = subprocess.run(
        [sys.executable, "-m", "chaospika.cli", "load", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("running")]
    assert len(lines) >= 2, done.stderr
    first = r"running \(01\.\ds\), 4/4 VUs, \d+ complete and 0 interrupted iterations, "
    assert re.match(first, lines[0]), lines[0]  # the tick may come a little late
    assert all("p(95)=" in line and "http_req_failed" in line for line in lines)
    quiet = subprocess.run(
        [sys.executable, "-m", "chaospika.cli", "load", "run", "--quiet", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert quiet.returncode == 0 and "running (" not in quiet.stderr
