"""Benchmark of the fault proxy (`chaospika.network`): `python bench/proxy.py`.

    python bench/proxy.py [--seconds 10] [--rate 1000] [--latency-ms 100]

One run, four ways to the same nginx (a 54-byte static file, one worker): the
load engine (bench/engine_child.py, `constant-arrival-rate` GETs at --rate/s)
asks nginx directly, through socat (Debian's, ``TCP-LISTEN:...,fork`` — the
plain-relay anchor), through our proxy (``python -m chaospika.network.server``,
no toxic) and through our proxy with a --latency-ms latency toxic. nginx and both
relays run on core 0, the generator on core 1 (taskset). A relay's CPU is read
from /proc (utime + stime, plus its reaped children for socat's forks) around
each run. Prints Markdown: one row per way, then each target MET / NOT MET:

- added p50 (relay p50 - direct p50) of our proxy <= 0.1 ms at 1,000 requests/s;
- our proxy's CPU per 1,000 requests <= 2x socat's;
- latency toxic error (p50 and p99 through the toxic - the same without it - the
  latency) within +-2 ms at 1,000 requests/s.

Every child is bounded in time and stopped by its pid; see bench/README.md.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import SERVER_CORE, measure, start, stop
from servers import nginx

from chaospika._ports import free_port, wait_for_port
from chaospika.network.client import add_toxic, create_proxy, remove_toxic

BENCH_DIR = Path(__file__).resolve().parent
OVERHEAD = 45.0  # seconds a generator may run past its planned duration
STARTUP_TIMEOUT = 15.0
PREALLOCATED = 50  # VUs of the runs without a toxic (about 1 in flight at a time)
TOXIC_VUS = 200  # with the toxic: rate x latency requests are in flight at once
TICKS = os.sysconf("SC_CLK_TCK")
TARGET_ADDED_P50_MS = 0.1
TARGET_CPU_RATIO = 2.0
TARGET_TOXIC_ERROR_MS = 2.0


@dataclass
class Way:
    """One way to nginx and what the generator and the relay measured on it."""

    name: str
    url: str
    relay_pid: int | None = None
    requests: float = 0.0
    failed: float = 0.0
    dropped: float = 0.0
    duration_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    relay_cpu_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def cpu_per_1k(self) -> float | None:
        if self.relay_cpu_s is None or not self.requests:
            return None
        return self.relay_cpu_s / self.requests * 1000


def _cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and of the children it has reaped (/proc/pid/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / TICKS


def _children(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return handle.read().split()
    except OSError:
        return []


def _spec(url: str, rate: int, seconds: float, vus: int) -> dict:
    scenario = {
        "executor": "constant-arrival-rate",
        "rate": rate,
        "timeUnit": "1s",
        "duration": f"{seconds:g}s",
        "preAllocatedVUs": vus,
        "maxVUs": max(vus, 500),
        "steps": [{"request": {"method": "GET", "url": url}}],
    }
    return {"scenarios": {"bench": scenario}}


def _generate(way: Way, rate: int, seconds: float, vus: int) -> None:
    """Run the load engine on `way` (core 1); read the relay's CPU around it."""
    before = None if way.relay_pid is None else _cpu_seconds(way.relay_pid)
    argv = [sys.executable, str(BENCH_DIR / "engine_child.py")]
    measured = measure(
        [*argv, json.dumps(_spec(way.url, rate, seconds, vus))], seconds + OVERHEAD
    )
    if way.relay_pid is not None:
        deadline = time.monotonic() + 5.0  # socat's children exit with their client
        while _children(way.relay_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        way.relay_cpu_s = _cpu_seconds(way.relay_pid) - before
    report = None
    for line in reversed(measured.stdout.strip().splitlines()):
        try:
            report = json.loads(line)
            break
        except ValueError:
            continue
    if measured.returncode != 0 or report is None:
        raise RuntimeError(
            f"{way.name}: the generator failed (rc {measured.returncode}): "
            f"{(measured.stderr or measured.stdout)[-1500:]}"
        )
    trend = report["http_req_duration"]
    way.requests = report["http_reqs"]
    way.failed = report["http_req_failed"]
    way.dropped = report["dropped_iterations"]
    way.duration_s = report["duration_s"]
    way.p50_ms, way.p95_ms, way.p99_ms = trend["med"], trend["p(95)"], trend["p(99)"]
    way.notes.extend(report["warnings"])


def _socat(target_port: int, workdir: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    argv = [
        shutil.which("socat") or "/usr/bin/socat",
        f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=4096",
        f"TCP:127.0.0.1:{target_port},nodelay",
    ]
    relay = start(argv, log=os.path.join(workdir, "socat.log"))
    if not wait_for_port("127.0.0.1", port, STARTUP_TIMEOUT):
        stop(relay)
        raise RuntimeError("socat did not start")
    return relay, port


def _our_proxy(target_port: int, workdir: str) -> tuple[subprocess.Popen, str, int]:
    api_port = free_port()
    argv = [
        sys.executable,
        "-m",
        "chaospika.network.server",
        "--listen",
        f"127.0.0.1:{api_port}",
    ]
    relay = start(argv, log=os.path.join(workdir, "proxy.log"))
    if not wait_for_port("127.0.0.1", api_port, STARTUP_TIMEOUT):
        stop(relay)
        raise RuntimeError("the proxy server did not start")
    api = f"http://127.0.0.1:{api_port}"
    listen = create_proxy(api, "nginx", f"127.0.0.1:{target_port}")["listen"]
    return relay, api, int(listen.rsplit(":", 1)[1])


def _path(url: str) -> str:
    return url.split("/", 3)[3]


def _row(way: Way, direct: Way) -> str:
    per_1k = way.cpu_per_1k()
    cpu = "-" if way.relay_cpu_s is None else f"{way.relay_cpu_s:.2f}"
    per = "-" if per_1k is None else f"{per_1k:.4f}"
    added = way.p50_ms - direct.p50_ms
    return (
        f"| {way.name} | {way.requests:,.0f} | {way.requests / way.duration_s:,.1f} "
        f"| {way.failed:.4f} | {way.dropped:,.0f} | {way.p50_ms:.3f} | {way.p95_ms:.3f} "
        f"| {way.p99_ms:.3f} | {added:+.3f} | {cpu} | {per} |"
    )


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def run(seconds: float, rate: int, latency_ms: int) -> int:
    folder = tempfile.mkdtemp(prefix="pika-proxy-bench-")
    os.chmod(folder, 0o755)
    load_before = os.getloadavg()
    try:
        with nginx(folder) as url:
            nginx_port = int(url.split(":")[2].split("/")[0])
            path = _path(url)
            socat, socat_port = _socat(nginx_port, folder)
            proxy, api, proxy_port = _our_proxy(nginx_port, folder)
            try:
                direct = Way("direct", url)
                via_socat = Way(
                    "socat", f"http://127.0.0.1:{socat_port}/{path}", socat.pid
                )
                ours = Way(
                    "chaospika proxy",
                    f"http://127.0.0.1:{proxy_port}/{path}",
                    proxy.pid,
                )
                toxic = Way(
                    f"chaospika proxy + latency {latency_ms} ms",
                    ours.url,
                    proxy.pid,
                )
                for way in (direct, via_socat, ours):
                    _generate(way, rate, seconds, PREALLOCATED)
                body = {"type": "latency", "attributes": {"latency": latency_ms}}
                add_toxic(api, "nginx", body)
                try:
                    _generate(toxic, rate, seconds, TOXIC_VUS)
                finally:
                    remove_toxic(api, "nginx", "latency_downstream")
            finally:
                stop(proxy)
                stop(socat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    load_after = os.getloadavg()

    print(
        f"constant-arrival-rate {rate}/s for {seconds:g} s per way, GET of nginx's "
        f"54-byte file; nginx and the relays on core {SERVER_CORE}, the load engine on "
        "core 1. Load average before/after: "
        + " ".join(f"{v:.2f}" for v in load_before)
        + " / "
        + " ".join(f"{v:.2f}" for v in load_after)
        + "\n"
    )
    print(
        "| way | requests | achieved/s | failed | dropped | p50 ms | p95 ms | p99 ms "
        "| p50 vs direct ms | relay CPU s | relay CPU s/1k req |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for way in (direct, via_socat, ours, toxic):
        print(_row(way, direct))
    for way in (direct, via_socat, ours, toxic):
        for note in way.notes:
            print(f"\n- {way.name}: {note}")

    added = ours.p50_ms - direct.p50_ms
    cpu_ratio = (ours.cpu_per_1k() or 0) / (via_socat.cpu_per_1k() or float("inf"))
    error_p50 = toxic.p50_ms - ours.p50_ms - latency_ms
    error_p99 = toxic.p99_ms - ours.p99_ms - latency_ms
    targets = [
        (
            f"added p50 at {rate}/s <= {TARGET_ADDED_P50_MS} ms",
            added <= TARGET_ADDED_P50_MS,
            f"{added:+.3f} ms (socat {via_socat.p50_ms - direct.p50_ms:+.3f} ms)",
        ),
        (
            f"relay CPU per 1k requests <= {TARGET_CPU_RATIO:g}x socat's",
            cpu_ratio <= TARGET_CPU_RATIO,
            (
                f"{cpu_ratio:.2f}x ({ours.cpu_per_1k() or 0:.4f} vs "
                f"{via_socat.cpu_per_1k() or 0:.4f} s)"
            ),
        ),
        (
            f"latency toxic error at p50 within +-{TARGET_TOXIC_ERROR_MS:g} ms",
            abs(error_p50) <= TARGET_TOXIC_ERROR_MS,
            f"{error_p50:+.3f} ms",
        ),
        (
            f"latency toxic error at p99 within +-{TARGET_TOXIC_ERROR_MS:g} ms",
            abs(error_p99) <= TARGET_TOXIC_ERROR_MS,
            f"{error_p99:+.3f} ms",
        ),
    ]
    print("\n| target | result | detail |\n|---|---|---|")
    for name, ok, detail in targets:
        print(f"| {name} | {_verdict(ok)} | {detail} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--latency-ms", type=int, default=100)
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 60 or not 1 <= args.rate <= 20000:
        parser.error("--seconds must be 1..60 and --rate 1..20000")
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    for tool in ("nginx", "socat"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            print(f"{tool} is missing: apt-get install -y {tool}", file=sys.stderr)
            return 1
    try:
        return run(args.seconds, args.rate, args.latency_ms)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
