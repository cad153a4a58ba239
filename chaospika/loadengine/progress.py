"""Live progress of a run: the once-a-second report and the load generator's health.

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

__all__ = ["LAG_LIMIT_MS", "LagMonitor", "ProgressMeter", "Totals", "lag_warning"]

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
    """Running totals of one process (or all of them, summed)."""

    vus: int = 0
    vus_max: int = 0
    iterations: int = 0
    dropped: int = 0
    http_reqs: int = 0
    errors: int = 0
    lag_p95_ms: float = 0.0
    lag_sustained_ms: float = 0.0  # LagMonitor.sustained_p95_ms

    def add(self, other: "Totals") -> None:
        """Sum another process's totals into these (lags: the worst)."""
        self.vus += other.vus
        self.vus_max += other.vus_max
        self.iterations += other.iterations
        self.dropped += other.dropped
        self.http_reqs += other.http_reqs
        self.errors += other.errors
        self.lag_p95_ms = max(self.lag_p95_ms, other.lag_p95_ms)
        self.lag_sustained_ms = max(self.lag_sustained_ms, other.lag_sustained_ms)


class ProgressMeter:
    """Turns successive totals into the progress dicts given to `on_progress`."""

    def __init__(self) -> None:
        self._last_elapsed = 0.0
        self._last_reqs = 0
        self._last_iterations = 0

    def report(self, elapsed: float, totals: Totals) -> dict[str, Any]:
        """{"elapsed", "vus", "iterations", "rps", "errors", ...} for this second."""
        span = max(elapsed - self._last_elapsed, 1e-9)
        rps = (totals.http_reqs - self._last_reqs) / span
        iterations_per_s = (totals.iterations - self._last_iterations) / span
        self._last_elapsed = elapsed
        self._last_reqs = totals.http_reqs
        self._last_iterations = totals.iterations
        warning = None
        if totals.lag_sustained_ms > LAG_LIMIT_MS:
            warning = lag_warning(totals.lag_sustained_ms)
        return {
            "elapsed": round(elapsed, 3),
            "vus": totals.vus,
            "vus_max": totals.vus_max,
            "iterations": totals.iterations,
            "iterations_per_s": round(iterations_per_s, 2),
            "dropped_iterations": totals.dropped,
            "rps": round(rps, 2),
            "errors": totals.errors,
            "loop_lag_p95_ms": round(totals.lag_p95_ms, 2),
            "warning": warning,
        }
