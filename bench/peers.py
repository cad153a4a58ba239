"""The load generators compared: chaospika's engine, k6 and wrk (and the WebSocket
floor, bench/ws_floor.py: the same traffic from a bare uvloop client).

Each runs as a child pinned to the generator core; each returns a `Run` with
the same fields, whatever the tool reports them as.
"""

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from procs import Measured, measure

__all__ = ["Run", "k6", "k6_binary", "ours", "wrk", "ws_floor"]

BENCH_DIR = Path(__file__).resolve().parent
OVERHEAD = 45.0  # seconds a child may run past its planned duration


@dataclass
class Run:
    """One generator run: what it did (from its own report) and what it cost."""

    tool: str
    label: str
    measured: Measured
    duration_s: float = 0.0
    requests: float = 0.0
    iterations: float = 0.0
    dropped: float = 0.0
    ws_messages: float = 0.0  # sent + received
    p95_ms: float | None = None
    p99_ms: float | None = None
    checks: float | None = None
    failed: float | None = None
    vus_max: float | None = None
    run_cpu_s: float | None = None  # ours only: CPU of runner.run() alone
    round: int = 1  # which round of a benchmark run in rounds (suites.in_rounds)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.measured.returncode == 0 and not self.measured.timed_out

    @property
    def cpu_s(self) -> float:
        return self.measured.cpu_s

    def rate(self, count: float) -> float:
        return count / self.duration_s if self.duration_s else 0.0

    def cpu_per_1k(self, count: float) -> float | None:
        """Generator CPU seconds per 1,000 of `count` (None when nothing counted)."""
        return self.cpu_s / count * 1000 if count else None

    def failure(self) -> str:
        """Why this run is not usable ('' when it is)."""
        if self.ok:
            return ""
        why = "timed out" if self.measured.timed_out else "failed"
        return f"{self.tool} {why} (rc {self.measured.returncode}): " + (
            self.measured.stderr[-1500:] or self.measured.stdout[-1500:]
        )


def ours(label: str, spec: dict, seconds: float) -> Run:
    """Run `spec` with chaospika's engine in bench/engine_child.py."""
    argv = [sys.executable, str(BENCH_DIR / "engine_child.py"), json.dumps(spec)]
    measured = measure(argv, seconds + OVERHEAD)
    run = Run("chaospika", label, measured)
    report = _last_json(measured.stdout)
    if report is None:
        return run
    trend = report["http_req_duration"]
    run.duration_s = report["duration_s"]
    run.requests = report["http_reqs"]
    run.iterations = report["iterations"]
    run.dropped = report["dropped_iterations"]
    run.ws_messages = report["ws_msgs_sent"] + report["ws_msgs_received"]
    run.p95_ms, run.p99_ms = trend["p(95)"], trend["p(99)"]
    run.checks, run.failed = report["checks"], report["http_req_failed"]
    run.vus_max, run.run_cpu_s = report["vus_max"], report["run_cpu_s"]
    run.notes.extend(report["warnings"])
    return run


def k6_binary() -> str | None:
    beside = Path(sys.executable).with_name("k6")
    return str(beside) if beside.exists() else shutil.which("k6")


def k6(label: str, script: str, env: dict[str, str], seconds: float) -> Run:
    """Run bench/k6/<script> with `env` as __ENV; numbers from --summary-export."""
    with tempfile.TemporaryDirectory(prefix="chaospika-bench-k6-") as folder:
        export = os.path.join(folder, "summary.json")
        argv = [
            k6_binary() or "k6",
            "run",
            "--quiet",
            "--no-color",
            "--no-usage-report",
            "--summary-trend-stats",
            "avg,med,p(95),p(99),max",
            "--summary-export",
            export,
            str(BENCH_DIR / "k6" / script),
        ]
        for name, value in env.items():
            argv += ["--env", f"{name}={value}"]
        child_env = {**os.environ, "K6_NO_USAGE_REPORT": "true"}
        measured = measure(argv, seconds + OVERHEAD, env=child_env, cwd=folder)
        run = Run("k6", label, measured)
        try:
            with open(export) as handle:
                summary = json.load(handle)
        except (OSError, ValueError):
            return run
    metrics = summary["metrics"]

    def count(name: str) -> float:
        return metrics.get(name, {}).get("count", 0)

    run.duration_s = _k6_duration(metrics)
    run.requests = count("http_reqs")
    run.iterations = count("iterations")
    run.dropped = count("dropped_iterations")
    run.ws_messages = count("ws_msgs_sent") + count("ws_msgs_received")
    trend = metrics.get("http_req_duration", {})
    run.p95_ms, run.p99_ms = trend.get("p(95)"), trend.get("p(99)")
    if "checks" in metrics:
        run.checks = metrics["checks"]["value"]
    if "http_req_failed" in metrics:
        run.failed = metrics["http_req_failed"]["value"]
    run.vus_max = metrics.get("vus_max", {}).get("max")
    return run


def wrk(
    label: str, url: str, connections: int, seconds: float, delay_ms: float = 0
) -> Run:
    """wrk -t1 -cN (paced by bench/wrk/report.lua when `delay_ms` > 0)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    argv += ["-s", str(BENCH_DIR / "wrk" / "report.lua"), url]
    env = {**os.environ, "WRK_DELAY_MS": f"{delay_ms:g}"}
    measured = measure(argv, seconds + OVERHEAD, env=env)
    run = Run("wrk", label, measured)
    line = next(
        (x for x in measured.stdout.splitlines() if x.startswith("WRKJSON ")), None
    )
    if line is None:
        return run
    report = json.loads(line.removeprefix("WRKJSON "))
    run.duration_s = report["duration_us"] / 1e6
    run.requests = run.iterations = report["requests"]
    run.p95_ms, run.p99_ms = report["p95_us"] / 1000, report["p99_us"] / 1000
    errors = report["errors"] + report["non_2xx"]
    run.failed = errors / report["requests"] if report["requests"] else None
    return run


def ws_floor(label: str, env: dict[str, str], seconds: float) -> Run:
    """bench/ws_floor.py with the WebSocket benchmark's settings (`env`, as for k6)."""
    settings = [env[name] for name in ("URL", "VUS")]
    settings += [f"{seconds:g}", env["COUNT"], env["EVERY_MS"], env["TIMEOUT_MS"]]
    argv = [sys.executable, str(BENCH_DIR / "ws_floor.py"), *settings]
    measured = measure(argv, seconds + OVERHEAD)
    run = Run("uvloop floor", label, measured)
    report = _last_json(measured.stdout)
    if report is None:
        return run
    run.duration_s = report["duration_s"]
    run.iterations = report["sessions"]
    run.ws_messages = report["ws_msgs_sent"] + report["ws_msgs_received"]
    if report["sessions"]:
        run.checks = report["complete"] / report["sessions"]
    return run


def _k6_duration(metrics: dict) -> float:
    """The test's duration: k6 exports counters as count and count / duration."""
    for metric in metrics.values():
        if metric.get("count") and metric.get("rate"):
            return metric["count"] / metric["rate"]
    return 0.0


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None
