"""The five benchmarks; each takes (seconds, workdir) and returns a report Section.

The three CPU benchmarks (get, post, ws) also take `rounds`: every generator runs
once per round, round after round (A B A B ...), and a target is judged on the
median of the per-round ratios, each pairing runs of the same round. One run of
each says little: k6's CPU per 1,000 moved by a third between two runs here.
"""

import os
import statistics
import time
from collections.abc import Callable

import peers
import servers
from peers import Run
from report import Section, Target, num, percent, ratio

__all__ = ["ROUNDED", "ROUNDS", "SUITES", "in_rounds"]

VUS = 50  # closed-model VUs of the GET, POST and WebSocket benchmarks
WS_COUNT = 100  # messages per WebSocket session
WS_EVERY_MS = 10  # milliseconds between two messages of a session
ARRIVAL_RATES = (1000, 5000)  # iterations per second of the open-model runs
PREALLOCATED, MAX_VUS = 50, 500  # VUs of the open-model runs
PACED_CONNECTIONS = (1, 10)  # wrk runs paced to about ARRIVAL_RATES[0] per second
IDLE_VUS = 10_000
PRODUCT = "bench"
RSS_LIMIT_MB = 500
# CPU per 1,000 requests (messages) at most this many times the peer's (issue 8)
GET_VS_K6, GET_VS_WRK, POST_VS_K6, WS_VS_K6 = 0.5, 2.0, 1.0, 0.5
ROUNDS = 3  # default rounds of the CPU benchmarks

Count = Callable[[Run], float]


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _closed(step: dict, vus: int, seconds: float, **options: object) -> dict:
    """A chaospika spec: one constant-vus scenario running `step`."""
    scenario = {"executor": "constant-vus", "vus": vus, "duration": _duration(seconds)}
    return {"scenarios": {"bench": {**scenario, **options, "steps": [step]}}}


def in_rounds(rounds: int, one_round: Callable[[int], list[Run]]) -> list[Run]:
    """`one_round(number)` for rounds 1..`rounds`; each run is numbered with its round."""
    runs: list[Run] = []
    for number in range(1, rounds + 1):
        for run in one_round(number):
            run.round = number
            if rounds > 1:
                run.label += f", round {number}"
            runs.append(run)
    return runs


def _same_round(runs: list[Run], tool: str, count: Count) -> dict[int, float | None]:
    """CPU per 1,000 `count` of `tool`'s run in each round."""
    return {run.round: run.cpu_per_1k(count(run)) for run in runs if run.tool == tool}


def _cpu_results(
    section: Section,
    count: Count,
    middle: Callable[[Run], list[str]],
    target: tuple[str, float],
) -> None:
    """One row per run (tool, label, `middle` cells, CPU s, CPU s/1k, ratio to k6's
    run of the same round), and the CPU target: (what, at most this many times k6's
    CPU per 1,000 counted, on the median of the rounds).
    """
    reference = _same_round(section.runs, "k6", count)
    for run in section.runs:
        per_1k = run.cpu_per_1k(count(run))
        section.rows.append(
            [
                run.tool,
                run.label,
                *middle(run),
                num(run.cpu_s, 2),
                num(per_1k, 4),
                num(ratio(per_1k, reference[run.round]), 2),
            ]
        )
    section.targets.append(_cpu_target(*target, section, count))


def _cpu_target(
    what: str, limit: float, section: Section, count: Count, peer: str = "k6"
) -> Target:
    """chaospika's CPU per 1,000 `count` at most `limit` times `peer`'s (median of
    the per-round ratios)."""
    goal = f"{what} CPU/1k <= {limit:.1f}x {peer}"
    runs = [run for run in section.runs if run.tool in ("chaospika", peer)]
    ours = _same_round(runs, "chaospika", count)
    other = _same_round(runs, peer, count)
    values = [ratio(ours[n], other.get(n)) for n in sorted(ours)]
    if not values or None in values or not all(run.ok for run in runs):
        return Target(goal, None, "not measured")
    failing = [run for run in runs if run.checks is not None and run.checks < 1.0]
    if failing:  # the workload was not the one described: its CPU says nothing
        names = ", ".join(f"{run.tool} {run.label}" for run in failing)
        return Target(goal, None, f"not measured: checks failed in {names}")
    value = statistics.median(values)
    rounds = (
        f", median of {len(values)} rounds ({', '.join(f'{v:.2f}' for v in values)})"
        if len(values) > 1
        else ""
    )
    return Target(
        goal,
        value <= limit,
        f"{value:.2f}x {peer}{rounds}: {statistics.median(ours.values()):.4f} vs "
        f"{statistics.median(other.values()):.4f} CPU s/1k (medians)",
    )


def _requests(run: Run) -> float:
    return run.requests


def _messages(run: Run) -> float:
    return run.ws_messages


# -- 1. plain GET ------------------------------------------------------------------


def bench_get(seconds: float, workdir: str, rounds: int = ROUNDS) -> Section:
    """GET a static file from nginx: chaospika, k6 and wrk, 50 connections each."""
    section = Section(
        "get",
        f"1. Plain GET, {VUS} VUs, nginx (static {len(servers.STATIC_BODY)} B body)",
        ["tool", "run", "requests", "RPS", "p95 ms", "CPU s", "CPU s/1k req"]
        + ["vs k6", "vs wrk"],
    )
    label = f"constant-vus {VUS}"
    with servers.nginx(workdir) as url:
        step = {"request": {"method": "GET", "url": url}}
        env = {"URL": url, "VUS": str(VUS), "DURATION": _duration(seconds)}
        section.runs = in_rounds(
            rounds,
            lambda _: [
                peers.ours(label, _closed(step, VUS, seconds), seconds),
                peers.k6(label, "get.js", env, seconds),
                peers.wrk(f"-c{VUS} -t1", url, VUS, seconds),
            ],
        )
    _cpu_results(
        section,
        _requests,
        lambda run: [
            num(run.requests, 0),
            num(run.rate(run.requests), 0),
            num(run.p95_ms, 2),
        ],
        ("GET", GET_VS_K6),
    )
    reference = _same_round(section.runs, "wrk", _requests)
    for run, row in zip(section.runs, section.rows, strict=True):
        row.append(num(ratio(run.cpu_per_1k(run.requests), reference[run.round]), 2))
    section.targets.append(
        _cpu_target("GET", GET_VS_WRK, section, _requests, peer="wrk")
    )
    return section


# -- 2. POST JSON against the sandbox API ------------------------------------------


def bench_post(seconds: float, workdir: str, rounds: int = ROUNDS) -> Section:
    """POST orders (JSON, unique Idempotency-Key) to the sandbox API, check 202."""
    section = Section(
        "post",
        f"2. POST JSON + status check, {VUS} VUs, sandbox order API",
        ["tool", "run", "requests", "RPS", "p95 ms", "checks ok"]
        + ["CPU s", "CPU s/1k req", "vs k6"],
    )
    prefix = f"bench{os.getpid()}x{int(time.time())}"
    label = f"constant-vus {VUS}"
    with servers.sandbox(workdir, PRODUCT, stock=10**9) as api:
        url = f"{api}/orders"

        def one_round(number: int) -> list[Run]:
            """Keys new to the API in every round (a repeated key is a replay, 200)."""
            step = {
                "request": {
                    "method": "POST",
                    "url": url,
                    "name": "orders",
                    "headers": {
                        "Idempotency-Key": f"{prefix}r{number}-py-{{{{vu}}}}-{{{{iter}}}}"
                    },
                    "json": {"product_id": PRODUCT, "user_id": "u{{vu}}"},
                },
                "checks": [{"status": [202]}],
            }
            env = {
                "URL": url,
                "VUS": str(VUS),
                "DURATION": _duration(seconds),
                "PRODUCT": PRODUCT,
                "PREFIX": f"{prefix}r{number}-k6",
            }
            return [
                peers.ours(label, _closed(step, VUS, seconds), seconds),
                peers.k6(label, "post.js", env, seconds),
            ]

        section.runs = in_rounds(rounds, one_round)
    _cpu_results(
        section,
        _requests,
        lambda run: [
            num(run.requests, 0),
            num(run.rate(run.requests), 0),
            num(run.p95_ms, 2),
            percent(run.checks),
        ],
        ("POST", POST_VS_K6),
    )
    return section


# -- 3. WebSocket messages ----------------------------------------------------------


def bench_ws(seconds: float, workdir: str, rounds: int = ROUNDS) -> Section:
    """Sessions of WS_COUNT JSON messages against a websockets echo server."""
    section = Section(
        "ws",
        f"3. WebSocket echo, {VUS} VUs, each iteration one session of {WS_COUNT} "
        f"messages every {WS_EVERY_MS} ms (and the uvloop floor, bench/ws_floor.py)",
        ["tool", "run", "messages (sent+recv)", "msgs/s", "sessions", "checks ok"]
        + ["CPU s", "CPU s/1k msgs", "vs k6"],
    )
    label = f"constant-vus {VUS}"
    with servers.ws_echo(workdir) as url:
        step = {
            "ws": {
                "url": url,
                "send": {
                    "every": f"{WS_EVERY_MS}ms",
                    "count": WS_COUNT,
                    "message": {"sent_at": "{{now_ms}}", "vu": "{{vu}}"},
                },
                "expect": {"count": WS_COUNT, "timeout": "5s"},
            }
        }
        env = {
            "URL": url,
            "VUS": str(VUS),
            "DURATION": _duration(seconds),
            "COUNT": str(WS_COUNT),
            "EVERY_MS": str(WS_EVERY_MS),
            "TIMEOUT_MS": "5000",
        }
        section.runs = in_rounds(
            rounds,
            lambda _: [
                peers.ours(label, _closed(step, VUS, seconds), seconds),
                peers.k6(label, "ws.js", env, seconds),
                peers.ws_floor(label, env, seconds),
            ],
        )
    _cpu_results(
        section,
        _messages,
        lambda run: [
            num(run.ws_messages, 0),
            num(run.rate(run.ws_messages), 0),
            num(run.iterations, 0),
            percent(run.checks),
        ],
        ("WebSocket", WS_VS_K6),
    )
    section.notes.append(_floor_note(section.runs))
    return section


def _floor_note(runs: list[Run]) -> str:
    """Where the uvloop floor (bench/ws_floor.py) stands against k6 and chaospika."""
    k6_runs, ours = (_same_round(runs, tool, _messages) for tool in ("k6", "chaospika"))
    floor = _same_round(runs, "uvloop floor", _messages)
    if not all(
        run.ok and run.checks == 1.0 for run in runs if run.tool == "uvloop floor"
    ):
        return "uvloop floor: not measured (a run failed or missed echoes)"

    def median_ratio(top: dict, bottom: dict) -> float | None:
        values = [ratio(top[n], bottom.get(n)) for n in sorted(top)]
        return None if not values or None in values else statistics.median(values)

    vs_k6, ours_vs_floor = median_ratio(floor, k6_runs), median_ratio(ours, floor)
    return (
        f"uvloop floor (the same traffic from a bare uvloop client, no engine): "
        f"{num(vs_k6, 2)}x k6; chaospika is {num(ours_vs_floor, 2)}x the floor "
        "(medians of same-round ratios)"
    )


# -- 4. constant-arrival-rate ----------------------------------------------------------


def _arrival_spec(url: str, rate: int, seconds: float) -> dict:
    scenario = {
        "executor": "constant-arrival-rate",
        "rate": rate,
        "timeUnit": "1s",
        "duration": _duration(seconds),
        "preAllocatedVUs": PREALLOCATED,
        "maxVUs": MAX_VUS,
        "steps": [{"request": {"method": "GET", "url": url}}],
    }
    return {"scenarios": {"bench": scenario}}


def _arrival_runs(url: str, seconds: float) -> list[tuple[Run, int | None]]:
    """(run, target rate): chaospika and k6 at every rate, then paced wrk runs."""
    runs: list[tuple[Run, int | None]] = []
    for rate in ARRIVAL_RATES:
        spec = _arrival_spec(url, rate, seconds)
        runs.append((peers.ours(f"{rate}/s", spec, seconds), rate))
    for rate in ARRIVAL_RATES:
        env = {
            "URL": url,
            "RATE": str(rate),
            "DURATION": _duration(seconds),
            "PREALLOCATED": str(PREALLOCATED),
            "MAX_VUS": str(MAX_VUS),
        }
        runs.append((peers.k6(f"{rate}/s", "arrival.js", env, seconds), rate))
    for connections in PACED_CONNECTIONS:
        delay = connections * 1000 / ARRIVAL_RATES[0]
        label = f"-c{connections} -t1 --latency, {delay:g} ms delay/request"
        runs.append((peers.wrk(label, url, connections, seconds, delay), None))
    return runs


def bench_arrival(seconds: float, workdir: str) -> Section:
    """Open model at fixed rates: achieved rate and p95 against k6 and paced wrk."""
    section = Section(
        "arrival",
        "4. constant-arrival-rate GET, nginx; wrk paced by a per-request delay",
        ["tool", "run", "target/s", "achieved/s", "achieved/target", "dropped"]
        + ["p95 ms", "p99 ms", "CPU s/1k req"],
    )
    with servers.nginx(workdir) as url:
        runs = _arrival_runs(url, seconds)
    section.runs = [run for run, _ in runs]
    for run, rate in runs:
        achieved = run.requests / seconds if rate else run.rate(run.requests)
        section.rows.append(
            [
                run.tool,
                run.label,
                str(rate) if rate else "(closed, paced)",
                num(achieved, 1),
                num(ratio(achieved, rate), 4) if rate else "",
                num(run.dropped, 0) if rate else "",
                num(run.p95_ms, 3),
                num(run.p99_ms, 3),
                num(run.cpu_per_1k(run.requests), 4),
            ]
        )
    ours = {rate: run for run, rate in runs if run.tool == "chaospika"}
    for rate, run in ours.items():
        achieved = run.requests / seconds
        value = ratio(achieved, rate)
        met = abs(value - 1) <= 0.01 if run.ok and value is not None else None
        section.targets.append(
            Target(
                f"achieved rate within 1% of {rate}/s",
                met,
                f"{achieved:,.1f}/s ({num(value, 4)})",
            )
        )
    section.targets.append(_p95_target(ours[ARRIVAL_RATES[0]], section.runs))
    return section


def _p95_target(ours: Run, runs: list[Run]) -> Target:
    """chaospika's p95 at the first rate at most 1 ms above the best paced wrk p95."""
    goal = f"p95 at {ARRIVAL_RATES[0]}/s at most 1 ms above wrk's best paced p95"
    wrk_p95 = [run.p95_ms for run in runs if run.tool == "wrk" and run.ok]
    if ours.p95_ms is None or not ours.ok or None in wrk_p95 or not wrk_p95:
        return Target(goal, None, "not measured")
    best = min(wrk_p95)
    return Target(
        goal,
        ours.p95_ms - best <= 1.0,
        f"ours {ours.p95_ms:.3f} ms; wrk "
        + " / ".join(f"{value:.3f}" for value in wrk_p95)
        + f" ms; ours - best = {ours.p95_ms - best:+.3f} ms",
    )


# -- 5. idle VUs -----------------------------------------------------------------------


def bench_idle(seconds: float, workdir: str) -> Section:
    """IDLE_VUS VUs that only sleep: the generator's peak RSS, chaospika and k6."""
    section = Section(
        "idle",
        f"5. {IDLE_VUS:,} idle VUs (each iteration sleeps 30 s), generator peak RSS",
        ["tool", "run", "vus_max seen", "peak RSS MB", "KB/VU", "CPU s", "vs k6 RSS"],
    )
    label = f"constant-vus {IDLE_VUS}"
    spec = _closed({"think": "30s"}, IDLE_VUS, seconds, gracefulStop="0s")
    env = {"VUS": str(IDLE_VUS), "DURATION": _duration(seconds)}
    ours = peers.ours(label, spec, seconds)
    k6 = peers.k6(label, "idle.js", env, seconds)
    section.runs = [ours, k6]
    for run in section.runs:
        rss = run.measured.maxrss_mb
        section.rows.append(
            [
                run.tool,
                run.label,
                num(run.vus_max, 0),
                num(rss, 1),
                num(rss * 1024 / IDLE_VUS, 1),
                num(run.cpu_s, 2),
                num(ratio(rss, k6.measured.maxrss_mb), 2),
            ]
        )
    rss = ours.measured.maxrss_mb
    reached = ours.vus_max is not None and ours.vus_max >= IDLE_VUS
    section.targets.append(
        Target(
            f"peak RSS with {IDLE_VUS:,} idle VUs < {RSS_LIMIT_MB} MB",
            rss < RSS_LIMIT_MB and reached if ours.ok else None,
            f"{rss:,.1f} MB, vus_max {num(ours.vus_max, 0)}",
        )
    )
    return section


ROUNDED = ("get", "post", "ws")  # the suites that take `rounds`
SUITES: dict[str, Callable[..., Section]] = {
    "get": bench_get,
    "post": bench_post,
    "ws": bench_ws,
    "arrival": bench_arrival,
    "idle": bench_idle,
}
