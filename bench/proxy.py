"""Benchmark of the fault proxy (`chaospika.network`): `python bench/proxy.py`.

    python bench/proxy.py [--rounds 10] [--seconds 2] [--warmup 0.5]
                          [--rate 1000] [--latency-ms 100]

Four ways to the same nginx (a 54-byte static file, one worker): the load engine
(chaospika.load, `constant-arrival-rate` GETs at --rate/s) asks nginx directly,
through socat (Debian's, ``TCP-LISTEN:...,fork``: the plain-relay anchor),
through our proxy without a toxic, and through our proxy with a --latency-ms
latency toxic (a second proxy of the same server process, so nothing changes
between rounds). nginx and both relays run on core 0, the generator on core 1.

The ways are interleaved: --rounds rounds, each running every way once for
--warmup + --seconds, the order rotated by one way each round, so that slow
drifts of a shared machine hit every way alike. In each run the requests that
started during the first --warmup seconds (new connections, a cold generator)
are not counted in its latency percentiles. Each target is judged on the
median over the rounds of its per-round paired difference (same round, a few
seconds apart); the spread over the rounds is printed next to it:

- added p50: p50 through our proxy - p50 direct, <= 0.1 ms at 1,000 requests/s;
- relay CPU per 1,000 requests (utime + stime from /proc around each run, plus
  socat's reaped forks; all requests of the run, warm-up included), ours <= 2x
  socat's, on the sums over all rounds;
- latency toxic error: p50 (and p99) through the toxic - p50 (p99) through the
  same proxy without it - the latency, within +-2 ms at 1,000 requests/s.

The proxy server runs here (``--serve``) with a hook on the latency toxic that
records how late each delayed chunk left (forwarded - due); the bench prints
those percentiles too. Every child is bounded in time and stopped by its pid.
"""

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import GENERATOR_CORE, SERVER_CORE, measure, start, stop
from servers import nginx

from chaospika._ports import free_port, wait_for_port
from chaospika.network.client import add_toxic, create_proxy

BENCH_DIR = Path(__file__).resolve().parent
OVERHEAD = 45.0  # seconds a generator may run past its planned duration
STARTUP_TIMEOUT = 15.0
PREALLOCATED = 50  # VUs of the runs without a toxic (about 1 in flight at a time)
TOXIC_VUS = 200  # with the toxic: rate x latency requests are in flight at once
TICKS = os.sysconf("SC_CLK_TCK")
TARGET_ADDED_P50_MS = 0.1
TARGET_CPU_RATIO = 2.0
TARGET_TOXIC_ERROR_MS = 2.0
WAYS = ("direct", "socat", "proxy", "toxic")


# -- the generator child: one run, every request's duration ----------------------


def child(spec_text: str, warmup: float) -> None:
    """Run one load spec; print one JSON line with the durations after `warmup`."""
    from chaospika.loadengine import LoadRun

    load = LoadRun(json.loads(spec_text))  # its registry exists before the run
    recorded = load.registry.add
    kept: list[float] = []
    early: list[float] = []
    began = time.perf_counter()
    clock = time.perf_counter

    def add(name: str, value: float, tags: dict | None = None) -> None:
        recorded(name, value, tags)
        if name == "http_req_duration":
            started = clock() - value / 1000.0 - began
            (early if started < warmup else kept).append(value)

    load.registry.add = add  # type: ignore[method-assign]
    result = load.run()
    registry = result.registry
    print(
        json.dumps(
            {
                "duration_s": result.duration_s,
                "requests": registry.stats("http_reqs")["count"],
                "failed": registry.stats("http_req_failed")["passes"],
                "dropped": registry.stats("dropped_iterations")["count"],
                "warmup_ms": early,
                "ms": kept,
                "warnings": result.warnings,
            }
        )
    )


# -- the proxy server with a lateness hook ---------------------------------------


def serve(listen: str, stats_path: str) -> None:
    """Our proxy server; SIGUSR1 writes the delayed chunks' lateness to `stats_path`."""
    from chaospika.network.server import ProxyServer, new_event_loop
    from chaospika.network.toxics.latency import Latency

    late_ms: list[float] = []
    Latency.on_forward = lambda late_s: late_ms.append(late_s * 1000.0)

    def dump() -> None:
        with open(stats_path + ".tmp", "w") as handle:
            json.dump(late_ms, handle)
        os.replace(stats_path + ".tmp", stats_path)
        late_ms.clear()

    async def main() -> None:
        server = ProxyServer(listen)
        await server.start()
        gc.freeze()  # as `python -m chaospika.network.server` does
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, dump)
        loop.add_signal_handler(signal.SIGTERM, done.set_result, None)
        try:
            await done
        finally:
            await server.stop()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


# -- the parent ------------------------------------------------------------------


@dataclass
class Run:
    """One way in one round: what the generator and the relay measured."""

    way: str
    round: int
    requests: float = 0.0
    failed: float = 0.0
    dropped: float = 0.0
    duration_s: float = 0.0
    ms: list[float] = field(default_factory=list)
    warmup_ms: list[float] = field(default_factory=list)
    relay_cpu_s: float | None = None
    late_ms: list[float] = field(default_factory=list)
    load1: float = 0.0
    notes: list[str] = field(default_factory=list)

    def p(self, q: float) -> float:
        return percentile(sorted(self.ms), q)


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, linear between ranks."""
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def tcp_counters() -> dict[str, int]:
    """Kernel TCP counters of this network namespace (other sessions' traffic too)."""
    wanted = {"RetransSegs", "ListenOverflows", "TCPSynRetrans"}
    found: dict[str, int] = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        try:
            with open(path) as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            for name, value in zip(names.split()[1:], values.split()[1:], strict=False):
                if name in wanted:
                    found[name] = int(value)
    return found


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


@dataclass
class Setup:
    urls: dict[str, str]
    relays: dict[str, int]  # way -> pid whose CPU is read
    proxy_pid: int
    stats_path: str
    rate: int
    seconds: float
    warmup: float


def _generate(setup: Setup, way: str, number: int) -> Run:
    """Run the load engine on `way` (core 1); read the relay's CPU around it."""
    run = Run(way, number, load1=os.getloadavg()[0])
    pid = setup.relays.get(way)
    before = None if pid is None else _cpu_seconds(pid)
    vus = TOXIC_VUS if way == "toxic" else PREALLOCATED
    spec = _spec(setup.urls[way], setup.rate, setup.warmup + setup.seconds, vus)
    argv = [sys.executable, __file__, "--child", json.dumps(spec)]
    argv += ["--warmup", str(setup.warmup)]
    measured = measure(argv, setup.warmup + setup.seconds + OVERHEAD)
    if pid is not None:
        deadline = time.monotonic() + 5.0  # socat's children exit with their client
        while _children(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        run.relay_cpu_s = _cpu_seconds(pid) - before
    if way == "toxic":
        run.late_ms = _lateness(setup)
    report = None
    for line in reversed(measured.stdout.strip().splitlines()):
        try:
            report = json.loads(line)
            break
        except ValueError:
            continue
    if measured.returncode != 0 or report is None:
        raise RuntimeError(
            f"{way}: the generator failed (rc {measured.returncode}): "
            f"{(measured.stderr or measured.stdout)[-1500:]}"
        )
    run.requests, run.failed = report["requests"], report["failed"]
    run.dropped, run.duration_s = report["dropped"], report["duration_s"]
    run.ms, run.warmup_ms = report["ms"], report["warmup_ms"]
    run.notes.extend(report["warnings"])
    return run


def _lateness(setup: Setup) -> list[float]:
    """The lateness the proxy recorded since the last call (SIGUSR1, then read)."""
    try:
        os.remove(setup.stats_path)
    except FileNotFoundError:
        pass
    os.kill(setup.proxy_pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5.0
    while not os.path.exists(setup.stats_path):
        if time.monotonic() > deadline:
            return []
        time.sleep(0.02)
    with open(setup.stats_path) as handle:
        return json.load(handle)


def _socat(target_port: int, workdir: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    argv = [
        shutil.which("socat") or "/usr/bin/socat",
        f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=4096,nodelay",
        f"TCP:127.0.0.1:{target_port},nodelay",
    ]
    relay = start(argv, log=os.path.join(workdir, "socat.log"))
    if not wait_for_port("127.0.0.1", port, STARTUP_TIMEOUT):
        stop(relay)
        raise RuntimeError("socat did not start")
    return relay, port


def _our_proxy(
    target_port: int, workdir: str, latency_ms: int
) -> tuple[subprocess.Popen, int, int, str]:
    """Our proxy server with two proxies to nginx: plain and with the toxic."""
    api_port = free_port()
    stats_path = os.path.join(workdir, "lateness.json")
    argv = [sys.executable, __file__, "--serve", f"127.0.0.1:{api_port}", stats_path]
    relay = start(argv, log=os.path.join(workdir, "proxy.log"))
    if not wait_for_port("127.0.0.1", api_port, STARTUP_TIMEOUT):
        stop(relay)
        raise RuntimeError("the proxy server did not start")
    api = f"http://127.0.0.1:{api_port}"
    upstream = f"127.0.0.1:{target_port}"
    plain = create_proxy(api, "nginx", upstream)["listen"]
    toxic = create_proxy(api, "nginx-latency", upstream)["listen"]
    body = {"type": "latency", "attributes": {"latency": latency_ms}}
    add_toxic(api, "nginx-latency", body)
    port = lambda listen: int(listen.rsplit(":", 1)[1])
    return relay, port(plain), port(toxic), stats_path


def _output(argv: list[str]) -> list[str]:
    """The lines `argv` prints (stdout, else stderr); none if it cannot run."""
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return (done.stdout or done.stderr).strip().splitlines()


def _versions() -> str:
    def first_line(argv: list[str]) -> str:
        return (_output(argv) or ["?"])[0]

    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio (no uvloop)"
    nginx_v = first_line([shutil.which("nginx") or "/usr/sbin/nginx", "-v"])
    socat_v = next(
        (
            line.strip()
            for line in _output([shutil.which("socat") or "/usr/bin/socat", "-V"])
            if "socat version" in line
        ),
        "socat ?",
    )
    return (
        f"Python {platform.python_version()} with {loop}; {nginx_v}; {socat_v}; "
        f"{os.cpu_count()} CPUs"
    )


def _order(number: int) -> list[str]:
    shift = number % len(WAYS)
    return [*WAYS[shift:], *WAYS[:shift]]


def run(args: argparse.Namespace) -> int:
    folder = tempfile.mkdtemp(prefix="pika-proxy-bench-")
    os.chmod(folder, 0o755)
    load_before = os.getloadavg()
    tcp_before = tcp_counters()
    began = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    runs: list[Run] = []
    try:
        with nginx(folder) as url:
            nginx_port = int(url.split(":")[2].split("/")[0])
            path = url.split("/", 3)[3]
            socat, socat_port = _socat(nginx_port, folder)
            proxy, plain_port, toxic_port, stats = _our_proxy(
                nginx_port, folder, args.latency_ms
            )
            try:
                setup = Setup(
                    urls={
                        "direct": url,
                        "socat": f"http://127.0.0.1:{socat_port}/{path}",
                        "proxy": f"http://127.0.0.1:{plain_port}/{path}",
                        "toxic": f"http://127.0.0.1:{toxic_port}/{path}",
                    },
                    relays={"socat": socat.pid, "proxy": proxy.pid, "toxic": proxy.pid},
                    proxy_pid=proxy.pid,
                    stats_path=stats,
                    rate=args.rate,
                    seconds=args.seconds,
                    warmup=args.warmup,
                )
                for number in range(args.rounds):
                    for way in _order(number):
                        runs.append(_generate(setup, way, number))
            finally:
                stop(proxy)
                stop(socat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    load_after = os.getloadavg()
    tcp = {k: v - tcp_before.get(k, 0) for k, v in tcp_counters().items()}
    return report(args, runs, began, (load_before, load_after), tcp)


def _fmt(values: list[float], digits: int = 3, sign: bool = True) -> str:
    form = f"{{:{'+' if sign else ''}.{digits}f}}"
    return " ".join(form.format(v) for v in values)


def report(
    args: argparse.Namespace,
    runs: list[Run],
    began: str,
    loads_around: tuple[tuple[float, ...], tuple[float, ...]],
    tcp: dict[str, int],
) -> int:
    load_before, load_after = loads_around
    by = {(r.way, r.round): r for r in runs}
    rounds = range(args.rounds)
    latency = args.latency_ms
    loads = [r.load1 for r in runs]
    print(f"# chaospika proxy benchmark, {began}\n")
    print(f"{_versions()}.\n")
    print(
        f"Method: {args.rounds} rounds; each round runs the four ways once, in a "
        f"rotated order, each for {args.warmup:g} s warm-up + {args.seconds:g} s "
        f"measured of constant-arrival-rate GETs at {args.rate}/s (a new generator "
        f"process per run, {PREALLOCATED} pre-allocated VUs, {TOXIC_VUS} with the "
        f"toxic). nginx and the relays on core {SERVER_CORE}, the generator on core "
        f"{GENERATOR_CORE}. Percentiles are over the requests that started after the "
        "warm-up; each target is judged on the median over the rounds of its "
        "per-round paired difference; relay CPU on the sums over all rounds "
        "(warm-up requests included).\n\n"
        "Definitions: added p50 = p50(proxy) - p50(direct); toxic error at pN = "
        f"pN(toxic) - pN(proxy) - {latency} ms, the toxic being a downstream "
        f"latency toxic of {latency} ms on a second proxy of the same server "
        "process; relay CPU = utime + stime of the relay process from "
        "/proc/PID/stat (socat: with its reaped forks) read before and after each "
        "run, per 1,000 requests of the run; the proxy's own lateness = the time "
        "a delayed chunk was written minus its deadline, recorded inside the "
        "proxy.\n"
    )
    print(
        "Load average (1, 5, 15 min) before: "
        + _fmt(list(load_before), 2, False)
        + "; after: "
        + _fmt(list(load_after), 2, False)
        + f"; 1-min load at the runs' starts: {min(loads):.2f}..{max(loads):.2f}. "
        "TCP counters of the network namespace during the bench (other sessions "
        "included): " + ", ".join(f"{k} +{v}" for k, v in sorted(tcp.items())) + ".\n"
    )

    print("## Per round (ms)\n")
    print(
        "| round | order | direct p50 | socat p50 | proxy p50 | proxy p99 "
        "| toxic p50 | toxic p99 | added p50 | toxic err p50 | toxic err p99 "
        "| proxy's own lateness p50 / p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    added, err50, err99 = [], [], []
    for n in rounds:
        d, s, o, t = (by[(w, n)] for w in WAYS)
        added.append(o.p(50) - d.p(50))
        err50.append(t.p(50) - o.p(50) - latency)
        err99.append(t.p(99) - o.p(99) - latency)
        print(
            f"| {n + 1} | {','.join(_order(n))} | {d.p(50):.3f} | {s.p(50):.3f} "
            f"| {o.p(50):.3f} | {o.p(99):.3f} | {t.p(50):.3f} | {t.p(99):.3f} "
            f"| {added[-1]:+.3f} | {err50[-1]:+.3f} | {err99[-1]:+.3f} "
            f"| {percentile(sorted(t.late_ms), 50):+.3f} / "
            f"{percentile(sorted(t.late_ms), 99):+.3f} |"
        )

    print("\n## All rounds pooled (requests after the warm-up)\n")
    print(
        "| way | requests | achieved/s | failed | dropped | p50 ms | p95 ms | p99 ms "
        "| p99 incl. warm-up ms | relay CPU s | relay CPU s/1k req |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    per_1k: dict[str, float] = {}
    for way in WAYS:
        mine = [r for r in runs if r.way == way]
        kept = sorted(v for r in mine for v in r.ms)
        every = sorted(v for r in mine for v in (*r.ms, *r.warmup_ms))
        requests = sum(r.requests for r in mine)
        achieved = requests / sum(r.duration_s for r in mine)
        cpu = None
        if mine[0].relay_cpu_s is not None:
            cpu = sum(r.relay_cpu_s or 0.0 for r in mine)
            per_1k[way] = cpu / requests * 1000
        print(
            f"| {way} | {requests:,.0f} | {achieved:,.1f} "
            f"| {sum(r.failed for r in mine):,.0f} | {sum(r.dropped for r in mine):,.0f} "
            f"| {percentile(kept, 50):.3f} | {percentile(kept, 95):.3f} "
            f"| {percentile(kept, 99):.3f} | {percentile(every, 99):.3f} "
            f"| {'-' if cpu is None else f'{cpu:.2f}'} "
            f"| {'-' if cpu is None else f'{per_1k[way]:.4f}'} |"
        )
    notes = sorted({f"{r.way}: {note}" for r in runs for note in r.notes})
    for note in notes:
        print(f"\n- {note}")

    late = sorted(v for r in runs for v in r.late_ms)
    if late:
        print(
            f"\nInside the proxy, {len(late):,} chunks delayed by the toxic left "
            f"(forwarded - due) p50 {percentile(late, 50):+.3f} ms, p95 "
            f"{percentile(late, 95):+.3f}, p99 {percentile(late, 99):+.3f}, max "
            f"{late[-1]:+.3f} ms."
        )

    ratios = [
        (by[("proxy", n)].relay_cpu_s or 0) / (by[("socat", n)].relay_cpu_s or 1e-9)
        for n in rounds
    ]
    cpu_ratio = per_1k["proxy"] / per_1k["socat"]
    socat_added = [by[("socat", n)].p(50) - by[("direct", n)].p(50) for n in rounds]
    targets = [
        (
            f"added p50 at {args.rate}/s <= {TARGET_ADDED_P50_MS} ms",
            statistics.median(added),
            lambda v: v <= TARGET_ADDED_P50_MS,
            added,
            f"; socat's median {statistics.median(socat_added):+.3f}",
        ),
        (
            f"relay CPU per 1k requests <= {TARGET_CPU_RATIO:g}x socat's",
            cpu_ratio,
            lambda v: v <= TARGET_CPU_RATIO,
            ratios,
            f"; {per_1k['proxy']:.4f} vs {per_1k['socat']:.4f} s per 1k",
        ),
        (
            f"latency toxic error at p50 within +-{TARGET_TOXIC_ERROR_MS:g} ms",
            statistics.median(err50),
            lambda v: abs(v) <= TARGET_TOXIC_ERROR_MS,
            err50,
            "",
        ),
        (
            f"latency toxic error at p99 within +-{TARGET_TOXIC_ERROR_MS:g} ms",
            statistics.median(err99),
            lambda v: abs(v) <= TARGET_TOXIC_ERROR_MS,
            err99,
            "",
        ),
    ]
    print(
        "\n## Targets\n\n| target | result | median over rounds | rounds within "
        "| spread (min..max) |\n|---|---|---|---|---|"
    )
    for name, value, ok, values, extra in targets:
        unit = "x" if "CPU" in name else " ms"
        within = sum(1 for v in values if ok(v))
        print(
            f"| {name} | {'MET' if ok(value) else 'NOT MET'} "
            f"| {value:+.3f}{unit}{extra} | {within}/{len(values)} "
            f"| {min(values):+.3f}..{max(values):+.3f} |"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, args.warmup)
        return 0
    if args.serve is not None:
        serve(*args.serve)
        return 0
    if not 1 <= args.rounds <= 50 or not 1 <= args.seconds <= 60:
        parser.error("--rounds must be 1..50 and --seconds 1..60")
    if not 0 <= args.warmup <= 10 or not 1 <= args.rate <= 20000:
        parser.error("--warmup must be 0..10 and --rate 1..20000")
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {int(GENERATOR_CORE)})
    for tool in ("nginx", "socat"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            print(f"{tool} is missing: apt-get install -y {tool}", file=sys.stderr)
            return 1
    try:
        return run(args)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
