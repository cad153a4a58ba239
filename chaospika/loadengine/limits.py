"""Resource caps of a run: VUs, open connections and memory, bounded by default.

The spec's optional `"limits": {"maxVUs": N, "maxConnections": N,
"maxMemoryMB": N}` raises (or lowers) the defaults. VUs are checked when the
spec is parsed (a ScenarioError names the option and the override);
connections are counted per run (a connection over the cap fails like a
refused dial); memory is the resident size of the load generator's processes,
checked a few times a second: over it, the run stops (`stopped_by:
"max_memory"`).
"""

import contextvars
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.validate import option_int, reject_unknown

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_MEMORY_MB",
    "DEFAULT_MAX_VUS",
    "ConnectionBudget",
    "Limits",
    "check_vus",
    "current_budget",
    "parse_limits",
    "rss_mb",
    "use_budget",
]

DEFAULT_MAX_VUS = 20_000  # the bench runs 10,000 idle VUs
DEFAULT_MAX_CONNECTIONS = 20_000
DEFAULT_MAX_MEMORY_MB = 2_048
KEYS = {
    "maxVUs": DEFAULT_MAX_VUS,
    "maxConnections": DEFAULT_MAX_CONNECTIONS,
    "maxMemoryMB": DEFAULT_MAX_MEMORY_MB,
}


@dataclass(frozen=True)
class Limits:
    """The caps of one run (whole test, all processes together)."""

    max_vus: int = DEFAULT_MAX_VUS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB


def parse_limits(raw: Any) -> Limits:
    """The spec's `limits` object (each key optional, each an integer >= 1)."""
    if raw is None:
        return Limits()
    if not isinstance(raw, Mapping):
        raise ScenarioError("limits", f"expected an object, got {raw!r}")
    raw = dict(raw)
    reject_unknown("limits", raw, KEYS)
    values = {
        key: option_int("limits", raw, key, default=default, minimum=1)
        for key, default in KEYS.items()
    }
    return Limits(values["maxVUs"], values["maxConnections"], values["maxMemoryMB"])


def _vu_peak(options: Any) -> tuple[str, int]:
    """(option, VUs): the most VUs one scenario may run, and the option setting it."""
    if hasattr(options, "max_vus"):
        return "maxVUs", max(options.max_vus, options.pre_allocated_vus)
    if hasattr(options, "start_vus"):
        peak = ("startVUs", options.start_vus)
        for number, stage in enumerate(options.stages):
            if stage.target > peak[1]:
                peak = (f"stages[{number}].target", stage.target)
        return peak
    return "vus", int(getattr(options, "vus", 0))


def check_vus(scenarios: Mapping[str, Any], limits: Limits) -> None:
    """Raise naming the option when the scenarios may run more than maxVUs VUs."""
    cap = limits.max_vus
    total = 0
    for name, scenario in scenarios.items():
        option, vus = _vu_peak(scenario.config.options)
        if vus > cap:
            raise ScenarioError(
                f"scenarios.{name}.{option}",
                f"{vus} VUs is above the limit of {cap}; lower it, or raise "
                f'the cap with "limits": {{"maxVUs": {vus}}}',
            )
        total += vus
    if total > cap:
        raise ScenarioError(
            "limits.maxVUs",
            f"the scenarios together may run {total} VUs, above the limit of "
            f'{cap}; lower them, or raise the cap with "limits": '
            f'{{"maxVUs": {total}}}',
        )


class ConnectionBudget:
    """Open connections of one run; `take()` is False once `cap` are open."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.open >= self.cap:
                return False
            self.open += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.open = max(0, self.open - 1)

    def error(self) -> str:
        return (
            f"too many open connections: the limit is {self.cap} "
            f'(raise it with "limits": {{"maxConnections": N}})'
        )


_budget: contextvars.ContextVar[ConnectionBudget | None] = contextvars.ContextVar(
    "chaospika_load_connection_budget", default=None
)


def use_budget(budget: ConnectionBudget | None) -> None:
    """Make `budget` the one of the current context (tasks created next inherit it)."""
    _budget.set(budget)


def current_budget() -> ConnectionBudget | None:
    """The connection budget of the run this task belongs to (None: no cap)."""
    return _budget.get()


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb(pid: int | None = None) -> float | None:
    """Resident memory of `pid` (default: this process) in MB; None if unknown."""
    path = f"/proc/{pid or 'self'}/statm"
    try:
        with open(path, "rb") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        if pid is not None:
            return None
        try:
            import resource
        except ImportError:  # pragma: no cover - Windows
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
        return peak / 1024.0
    return pages * _PAGE / (1024.0 * 1024.0)
