"""Live progress of a run: the once-a-second report and the load generator's health.

`Totals.read` takes the counts and the last second's p(95) of http_req_duration
from the run's registry (merged from every process in a multi-process run, and
computed by `Registry.tick` anyway: no extra work); `ProgressMeter.report` turns
them into the dict given to `on_progress`, and `progress_line` into k6's
"running (12.0s), 10/10 VUs, 97 complete and 0 interrupted iterations" followed
by the rates, the p(95) and the failures.

`LagMonitor` sleeps 50 ms again and again and keeps how late each wake-up was:
when the event loop is saturated (p95 lag > 20 ms) the generator itself, not
the system under test, limits the load, and the report says so. Saturation must
be sustained: the p95 of each second's own lags must exceed the limit two seconds
in a row, so that a single stall (such as starting 10,000 VUs) does not count.
"""

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LAG_LIMIT_MS",
    "LagMonitor",
    "ProgressMeter",
    "Totals",
    "lag_warning",
    "progress_line",
    "progress_parts",
    "wrap_parts",
]

LAG_LIMIT_MS = 20.0  # p95 event-loop lag above which the generator is saturated
_LAG_PERIOD = 0.05  # seconds between two lag samples
_LAG_WINDOW = 100  # samples in the p95 (the last ~5 s)


def lag_warning(p95_ms: float) -> str:
    """The warning of a saturated generator."""
    return (
        f"load generator saturated: event-loop lag p95 {p95_ms:.1f} ms > "
        f"{LAG_LIMIT_MS:g} ms; iterations start late and the load is lower than "
        f"asked (use more `processes` or a lighter scenario)"
    )


def _p95(samples: Iterable[float]) -> float:
    """Nearest-rank p95 (0 without samples)."""
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class LagMonitor:
    """Measures how late the event loop wakes up from a 50 ms sleep.

    `close_second()`, called once a second, judges that second's lags;
    `sustained_p95_ms` is the lower p95 of the last two seconds and
    `worst_p95_ms` its highest value so far (what the saturation warning uses).
    """

    def __init__(self, period: float = _LAG_PERIOD, window: int = _LAG_WINDOW) -> None:
        self.period = period
        self.samples: deque = deque(maxlen=window)
        self.second: list[float] = []  # lags of the second not closed yet
        self.previous_p95_ms = 0.0  # p95 of the last closed second
        self.sustained_p95_ms = 0.0
        self.worst_p95_ms = 0.0

    async def run(self) -> None:
        """Sample forever (cancel the task to stop)."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.period)
            lag = time.perf_counter() - started - self.period
            self.add(max(0.0, lag) * 1000.0)

    def add(self, lag_ms: float) -> None:
        """Record one wake-up's lag in ms."""
        self.samples.append(lag_ms)
        self.second.append(lag_ms)

    def close_second(self) -> None:
        """End the current second (a no-op without new lags since the last one)."""
        if not self.second:
            return
        p95 = _p95(self.second)
        self.second = []
        self.sustained_p95_ms = min(self.previous_p95_ms, p95)
        self.previous_p95_ms = p95
        self.worst_p95_ms = max(self.worst_p95_ms, self.sustained_p95_ms)

    def p95_ms(self) -> float:
        """p95 of the recent lags (the last ~5 s) in ms; 0 before any sample."""
        return _p95(self.samples)


@dataclass
class Totals:
    """Running totals of one process (or all of them, summed).

    Workers fill the VU counts, interrupted iterations, errors and lags, which
    `add` sums (lags: the worst); `read` fills the rest from the registry that
    holds every process's samples.
    """

    vus: int = 0
    vus_max: int = 0
    iterations: int = 0
    interrupted: int = 0
    dropped: int = 0
    http_reqs: int = 0
    http_req_failed: int = 0  # failed requests (k6's http_req_failed passes)
    http_req_failed_total: int = 0  # requests judged by http_req_failed
    checks: int = 0
    checks_failed: int = 0
    p95_ms: float | None = None  # http_req_duration p(95) of the last tick's second
    errors: int = 0
    lag_p95_ms: float = 0.0
    lag_sustained_ms: float = 0.0  # LagMonitor.sustained_p95_ms

    def add(self, other: "Totals") -> None:
        """Sum another process's totals into these (lags: the worst)."""
        self.vus += other.vus
        self.vus_max += other.vus_max
        self.iterations += other.iterations
        self.interrupted += other.interrupted
        self.dropped += other.dropped
        self.http_reqs += other.http_reqs
        self.http_req_failed += other.http_req_failed
        self.http_req_failed_total += other.http_req_failed_total
        self.checks += other.checks
        self.checks_failed += other.checks_failed
        self.errors += other.errors
        self.lag_p95_ms = max(self.lag_p95_ms, other.lag_p95_ms)
        self.lag_sustained_ms = max(self.lag_sustained_ms, other.lag_sustained_ms)

    def read(self, registry: Any, now: float | None = None) -> None:
        """Set the counts from `registry` and the p(95) of its tick at `now`.

        The p(95) is the one `Registry.tick(now)` put in the http_req_duration
        series: the requests that ended since the previous tick (None if none
        did). `now` defaults to the registry's last tick (its `elapsed`).
        """
        stats = registry.stats
        self.iterations = int(stats("iterations")["count"])
        self.dropped = int(stats("dropped_iterations")["count"])
        self.http_reqs = int(stats("http_reqs")["count"])
        failed = stats("http_req_failed")
        self.http_req_failed = int(failed["passes"])
        self.http_req_failed_total = int(failed["passes"] + failed["fails"])
        checks = stats("checks")
        self.checks = int(checks["passes"] + checks["fails"])
        self.checks_failed = int(checks["fails"])
        points = registry.series.get("http_req_duration")
        now = registry.elapsed if now is None else now
        self.p95_ms = None
        if points and points[-1]["t"] == now:
            self.p95_ms = points[-1]["p(95)"]


class ProgressMeter:
    """Turns successive totals into the progress dicts given to `on_progress`."""

    def __init__(self) -> None:
        self._last_elapsed = 0.0
        self._last_reqs = 0
        self._last_iterations = 0

    def report(self, elapsed: float, totals: Totals) -> dict[str, Any]:
        """{"elapsed", "vus", "iterations", "rps", "errors", ...} for this second.

        Rates and the p(95) cover `window_s`, the time since the previous report
        (about a second); the counts and failures cover the run so far.
        """
        span = max(elapsed - self._last_elapsed, 1e-9)
        rps = (totals.http_reqs - self._last_reqs) / span
        iterations_per_s = (totals.iterations - self._last_iterations) / span
        self._last_elapsed = elapsed
        self._last_reqs = totals.http_reqs
        self._last_iterations = totals.iterations
        warning = None
        if totals.lag_sustained_ms > LAG_LIMIT_MS:
            warning = lag_warning(totals.lag_sustained_ms)
        judged = totals.http_req_failed_total
        p95 = totals.p95_ms
        return {
            "elapsed": round(elapsed, 3),
            "window_s": round(span, 3),
            "vus": totals.vus,
            "vus_max": totals.vus_max,
            "iterations": totals.iterations,
            "interrupted_iterations": totals.interrupted,
            "iterations_per_s": round(iterations_per_s, 2),
            "dropped_iterations": totals.dropped,
            "http_reqs": totals.http_reqs,
            "rps": round(rps, 2),
            "http_req_duration_p95_ms": None if p95 is None else round(p95, 3),
            "http_req_failed": totals.http_req_failed,
            "http_req_failed_rate": round(totals.http_req_failed / judged, 6)
            if judged
            else 0.0,
            "checks": totals.checks,
            "checks_failed": totals.checks_failed,
            "errors": totals.errors,
            "loop_lag_p95_ms": round(totals.lag_p95_ms, 2),
            "warning": warning,
        }


def _clock(seconds: float) -> str:
    """k6's progress clock: 05.0s, 1m05.0s, 1h01m05.0s."""
    minutes, rest = divmod(max(seconds, 0.0), 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}h{minutes:02d}m{rest:04.1f}s"
    if minutes:
        return f"{minutes}m{rest:04.1f}s"
    return f"{rest:04.1f}s"


def _milliseconds(ms: float) -> str:
    """A duration as k6 prints it: 0s, 560.84µs, 7.76ms, 1.25s."""
    if ms <= 0:
        return "0s"  # e.g. only refused connections, which k6 times as 0
    if ms < 1:
        return f"{ms * 1000:.2f}µs"
    if ms < 1000:
        return f"{ms:.2f}ms"
    return f"{ms / 1000:.2f}s"


def progress_line(progress: dict[str, Any]) -> str:
    """One line of a progress report, k6's words first (no trailing newline).

    running (12.0s), 10/10 VUs, 97 complete and 0 interrupted iterations,
    8.0 iters/s, 16.0 reqs/s, p(95)=7.76ms (last 1s), http_req_failed 1.20%
    3 out of 250, checks_failed 2 out of 250
    """
    line = ", ".join(progress_parts(progress))
    if progress.get("warning"):
        line += f"  WARNING {progress['warning']}"
    return line


def progress_parts(progress: dict[str, Any]) -> list[str]:
    """The comma-separated parts of `progress_line`, without the warning."""
    interrupted = progress.get("interrupted_iterations", 0)
    parts = [
        f"running ({_clock(progress['elapsed'])})",
        f"{progress['vus']}/{progress['vus_max']} VUs",
        f"{progress['iterations']} complete and {interrupted} interrupted iterations",
    ]
    if progress.get("dropped_iterations"):
        parts.append(f"{progress['dropped_iterations']} dropped")
    parts.append(f"{progress['iterations_per_s']:.1f} iters/s")
    parts.append(f"{progress['rps']:.1f} reqs/s")
    window = max(1, round(progress.get("window_s") or 1))
    p95 = progress.get("http_req_duration_p95_ms")
    parts.append(f"p(95)={'-' if p95 is None else _milliseconds(p95)} (last {window}s)")
    judged = progress.get("http_req_failed_rate", 0.0)
    parts.append(
        f"http_req_failed {judged * 100:.2f}% "
        f"{progress.get('http_req_failed', 0)} out of {progress.get('http_reqs', 0)}"
    )
    if progress.get("checks"):
        parts.append(
            f"checks_failed {progress['checks_failed']} out of {progress['checks']}"
        )
    return parts


def wrap_parts(parts: list[str], width: int) -> list[str]:
    """`parts` joined by ", " into rows of at most `width` characters."""
    rows: list[str] = []
    for part in parts:
        if rows and len(rows[-1]) + 2 + len(part) + 1 <= width:
            rows[-1] += ", " + part
            continue
        if rows:
            rows[-1] += ","
        rows.append(part[: width - 1])  # room for the comma
    return rows
