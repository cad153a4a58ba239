"""What a WebSocket probe measured, in the load engine's metrics, and its thresholds.

The probes record into a `chaospika.loadengine.Registry` (k6's percentiles,
exact up to 4096 values, then HDR histograms) and judge k6-style thresholds
(`{"message_latency_ms": ["p(95)<5000"], "success_rate": ["rate>0.9"]}`) with
`chaospika.load.thresholds`, so a probe's p(95) is computed exactly as a load's.
"""

import asyncio
from collections.abc import Mapping
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaospika.loadengine import (
    Registry,
    ScenarioError,
    ThresholdSet,
    parse_selector,
    parse_thresholds,
)

__all__ = ["METRICS", "Measures", "event_loop"]

# name: (kind, is_time, what it is)
METRICS: dict[str, tuple[str, bool, str]] = {
    "message_latency_ms": (
        "trend",
        True,
        "end-to-end latency of each delivered message (ms)",
    ),
    "connect_ms": ("trend", True, "time to open a WebSocket (TCP + handshake, ms)"),
    "reconnect_ms": (
        "trend",
        True,
        "from a client's disconnect to being subscribed again (ms)",
    ),
    "success_rate": ("rate", False, "share of clients that got at least one message"),
    "delivery_rate": ("rate", False, "share of the expected deliveries that arrived"),
    "connection_success": ("rate", False, "share of connection attempts that opened"),
    "cycle_success": ("rate", False, "share of connect/disconnect cycles that worked"),
    "failed_connections": ("counter", False, "connection attempts that failed"),
}


def event_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Measures:
    """The registry of one probe run, restricted to the metrics the probe records."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.registry = Registry()
        for name in names:
            kind, is_time, _ = METRICS[name]
            self.registry.define(name, kind, is_time=is_time)
        self.add = self.registry.add

    def thresholds(self, spec: Any, unavailable: Mapping[str, str]) -> ThresholdSet:
        """Parse `thresholds`; ActivityFailed names the argument and what is wrong.

        `unavailable` maps metrics this run cannot record to the reason.
        """
        if spec is None:
            return ThresholdSet()
        if not isinstance(spec, Mapping):
            raise ActivityFailed(
                "argument 'thresholds' must map metric names to lists of expressions "
                f'such as {{"message_latency_ms": ["p(95)<5000"]}}, got {spec!r}'
            )
        for key in spec:
            try:
                name, tags = parse_selector(f"thresholds.{key}", key)
            except ScenarioError as error:
                raise ActivityFailed(f"argument 'thresholds': {error}") from None
            if tags:
                raise ActivityFailed(
                    f"argument 'thresholds': {key!r}: the WebSocket probes' metrics "
                    "have no tags"
                )
            if name in unavailable:
                raise ActivityFailed(
                    f"argument 'thresholds': {name} {unavailable[name]}"
                )
            if name not in self.names:
                raise ActivityFailed(
                    f"argument 'thresholds': no metric {name!r}; this probe has "
                    f"{', '.join(n for n in self.names if n not in unavailable)}"
                )
        try:
            return parse_thresholds(spec, self.registry)
        except ScenarioError as error:
            raise ActivityFailed(f"argument 'thresholds': {error}") from None

    def add_rate(self, name: str, passes: int, total: int) -> None:
        """Record `total` samples of a rate metric, `passes` of them non-zero."""
        if total:
            metric = self.registry.metric(name)
            metric.merge_state({"samples": total, "passes": passes})

    def trend(self, name: str, prefix: str) -> dict[str, float | None]:
        """p50, p95, p99, max, min and avg of a trend as `<prefix>_p95_ms` keys."""
        metric = self.registry.metric(name)
        if metric.empty:
            stats = dict.fromkeys(("p50", "p95", "p99", "max", "min", "avg"))
        else:
            stats = {
                "p50": metric.percentile(0.50),
                "p95": metric.percentile(0.95),
                "p99": metric.percentile(0.99),
                "max": metric.stat("max"),
                "min": metric.stat("min"),
                "avg": metric.stat("avg"),
            }
        return {
            f"{prefix}_{key}_ms": None if value is None else round(value, 3)
            for key, value in stats.items()
        }

    def judge(self, thresholds: ThresholdSet, elapsed: float) -> dict[str, Any]:
        """{"thresholds": {metric: {expression: passed}}, "thresholds_passed"}."""
        if not thresholds:
            return {}
        self.registry.elapsed = elapsed
        verdicts = thresholds.final(self.registry, elapsed)
        return {
            "thresholds": verdicts,
            "thresholds_passed": all(
                all(marks.values()) for marks in verdicts.values()
            ),
        }
