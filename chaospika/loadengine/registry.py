"""The metrics registry: every part of the engine records through it (k6's registry).

Hot path: `Registry.add(name, value, tags)` appends `value` to a plain list. The lists
are folded into each metric's state in slices of at most `FOLD_SLICE` values
(`Registry.fold_some`, which the runner calls every few tens of milliseconds), and
completely before any read, so a request costs a few list appends and no fold stalls
the event loop for long. Sub-metrics (`name{tag:value}`) exist only for selectors that
thresholds reference, and only metrics that have them look at the tags.
`snapshot()` / `merge()` combine registries of several processes exactly: merged counts,
sums, minima, maxima and histogram buckets equal those of one registry that saw
everything. Each run makes its own (`LoadSpec.new_registry()`).
"""

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.metrics import _CLASSES, DEFAULT_TREND_STATS, KINDS, Metric
from chaospika.loadengine.tags import (
    _route_entry,
    _tag_text,
    canonical_selector,
    parse_selector,
)

__all__ = ["BUILTIN_METRICS", "BUILTIN_SUBMETRICS", "FOLD_SLICE", "Registry"]

FOLD_SLICE = 4096  # values one `Registry.fold_some` call folds at most (a few ms)
_COUNTERS = (
    "http_reqs iterations dropped_iterations ws_msgs_sent ws_msgs_received ws_sessions"
)
_TIME_TRENDS = (
    "http_req_duration http_req_blocked http_req_connecting http_req_tls_handshaking "
    "http_req_sending http_req_waiting http_req_receiving iteration_duration "
    "group_duration ws_connecting ws_session_duration ws_ping ws_msg_latency"
)
BUILTIN_METRICS: dict[str, tuple[str, str]] = {
    **{name: ("counter", "default") for name in _COUNTERS.split()},
    "data_sent": ("counter", "data"),
    "data_received": ("counter", "data"),
    "vus": ("gauge", "default"),
    "vus_max": ("gauge", "default"),
    "http_req_failed": ("rate", "default"),
    "checks": ("rate", "default"),
    **{name: ("trend", "time") for name in _TIME_TRENDS.split()},
}
BUILTIN_SUBMETRICS = ("http_req_duration{expected_response:true}",)
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{1,128}")


_epochs = itertools.count(1)


def _fan_out(targets: tuple[Callable[[Any], None], ...]) -> Callable[[Any], None]:
    def record(value: Any) -> None:
        for target in targets:
            target(value)

    return record


class Registry:
    """All metrics of a test run; every part of the engine records through it."""

    def __init__(self) -> None:
        self.epoch = next(_epochs)  # changes when `recorders` results go stale
        self._metrics: dict[str, Metric] = {}
        self._appends: dict[str, Callable[[Any], None]] = {}
        self._submetrics: dict[str, Metric] = {}
        # per metric: (tag, value, append) entries; (None, None, f(value, tags)) ones
        self._routes: dict[str, list[tuple]] = {
            "checks": [(None, None, self._tally_check)],
            "group_duration": [(None, None, self._note_group_of)],
        }
        self.checks: dict[tuple[str, str], list[int]] = {}
        self.groups: dict[str, None] = {}
        self.series: dict[str, list[dict]] = {}
        self.elapsed = 0.0
        self._last_tick: float | None = None
        for name, (kind, contains) in BUILTIN_METRICS.items():
            self._create(name, kind, contains)
        self._metrics["vus_max"].merge_takes_max = True
        for selector in BUILTIN_SUBMETRICS:
            self.submetric(selector)

    # -- definitions ---------------------------------------------------------------
    def _create(self, name: str, kind: str, contains: str) -> Metric:
        metric = _CLASSES[kind](name, contains)
        self._metrics[name] = metric
        self._appends[name] = metric.append
        return metric

    def define(
        self, name: str, kind: str, is_time: bool = False, field: str = "metrics"
    ) -> Metric:
        """Declare a custom metric; redefining with another kind is a ScenarioError."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ScenarioError(
                field,
                f"invalid metric name {name!r}: use 2-129 ASCII letters, digits or "
                "underscores, starting with a letter or an underscore",
            )
        if kind not in KINDS:
            raise ScenarioError(
                f"{field}.{name}", f"kind must be one of {KINDS}, got {kind!r}"
            )
        contains = "time" if is_time and kind == "trend" else "default"
        existing = self._metrics.get(name)
        if existing is None:
            return self._create(name, kind, contains)
        if existing.kind != kind or (kind == "trend" and existing.contains != contains):
            raise ScenarioError(
                f"{field}.{name}",
                f"metric {name!r} already exists as a {existing.contains} {existing.kind}",
            )
        return existing

    def submetric(self, selector: str, field: str = "thresholds") -> Metric:
        """The sub-metric `name{tag:value,...}`, created on first use and fed on add."""
        if selector in self._submetrics:
            return self._submetrics[selector]
        name, tags = parse_selector(field, selector)
        if not tags:
            return self.metric(name, field)
        canonical = canonical_selector(selector)
        if canonical in self._submetrics:
            return self._submetrics[canonical]
        parent = self.metric(name, field)
        metric = _CLASSES[parent.kind](canonical, parent.contains, parent, tags)
        self._submetrics[canonical] = metric
        self.epoch = next(_epochs)  # recorders made before do not feed it
        self._routes.setdefault(name, []).append(_route_entry(tags, metric.append))
        return metric

    def metric(self, name: str, field: str = "metrics") -> Metric:
        """The metric or sub-metric called `name` (a selector creates the sub-metric)."""
        found = self._metrics.get(name) or self._submetrics.get(name)
        if found is not None:
            return found
        if "{" in name:
            return self.submetric(name, field)
        raise ScenarioError(field, f"no metric named {name!r}")

    def __contains__(self, name: str) -> bool:
        return name in self._metrics or name in self._submetrics

    def metrics(self) -> list[Metric]:
        """Every metric, each followed by its sub-metrics."""
        result = []
        for metric in self._metrics.values():
            result.append(metric)
            result += [s for s in self._submetrics.values() if s.parent is metric]
        return result

    # -- hot path ------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "add":  # an output wraps `add`: recorders must go through it
            object.__setattr__(self, "epoch", next(_epochs))
        object.__setattr__(self, name, value)

    def recorders(
        self, names: Iterable[str], tags: Mapping
    ) -> list[Callable[[Any], None]]:
        """Per name, a function `record(value)` doing what `add(name, value, tags)` does.

        The routing to sub-metrics is decided once, so `tags` must not change
        afterwards. The functions stay right while `epoch` keeps its value (a new
        sub-metric or a replaced `add` changes it): callers cache them with it.
        """
        result = []
        for name in names:
            if name not in self._appends:
                raise ScenarioError("metrics", f"no metric named {name!r}")
            if "add" in self.__dict__:  # wrapped by an output: call it every time
                result.append(lambda value, name=name: self.add(name, value, tags))
                continue
            targets = [self._appends[name]]
            for key, expected, target in self._routes.get(name, ()) if tags else ():
                if key is None:
                    targets.append(lambda value, target=target: target(value, tags))
                    continue
                found = tags.get(key)
                if found == expected or (
                    found is not None
                    and type(found) is not str
                    and _tag_text(found) == expected
                ):
                    targets.append(target)
            result.append(targets[0] if len(targets) == 1 else _fan_out(tuple(targets)))
        return result

    def add(self, name: str, value: float, tags: dict | None = None) -> None:
        """Record one value of metric `name` with the sample's tags."""
        try:
            self._appends[name](value)
        except KeyError:
            raise ScenarioError("metrics", f"no metric named {name!r}") from None
        if tags:
            routes = self._routes.get(name)
            if routes is not None:  # inlined: this runs for every request
                for key, expected, target in routes:
                    if key is None:
                        target(value, tags)
                        continue
                    found = tags.get(key)
                    if found == expected or (
                        found is not None
                        and type(found) is not str
                        and _tag_text(found) == expected
                    ):
                        target(value)

    def _tally_check(self, value: float, tags: Mapping) -> None:
        key = (tags.get("group") or "", tags.get("check", ""))
        tally = self.checks.get(key)
        if tally is None:
            key = (key[0], _tag_text(key[1]))
            tally = self.checks.setdefault(key, [0, 0])
            self._note_group(key[0])
        tally[0 if value else 1] += 1

    def _note_group_of(self, value: float, tags: Mapping) -> None:
        self._note_group(tags.get("group") or "")

    def _note_group(self, path: str) -> None:
        if path and path not in self.groups:
            parts = path.split("::")[1:]
            for depth in range(1, len(parts) + 1):
                self.groups.setdefault("::" + "::".join(parts[:depth]), None)

    # -- reading -------------------------------------------------------------------
    def fold(self) -> None:
        """Fold every pending value into the metrics' state."""
        for metric in self._metrics.values():
            metric.fold()
        for metric in self._submetrics.values():
            metric.fold()

    def fold_some(self, budget: int = FOLD_SLICE) -> int:
        """Fold at most `budget` pending values, oldest first; returns how many.

        Call it often (the runner does, every 50 ms) so that no fold of a whole
        second of values blocks the event loop; reads still fold everything.
        """
        folded = 0
        for metrics in (self._metrics.values(), self._submetrics.values()):
            for metric in metrics:
                if folded >= budget:
                    return folded
                if metric.pending:
                    folded += metric.fold(budget - folded)
        return folded

    @property
    def pending(self) -> int:
        """Values recorded but not folded yet."""
        metrics = (*self._metrics.values(), *self._submetrics.values())
        return sum(len(metric.pending) for metric in metrics)

    def tick(self, now: float) -> None:
        """Once per second: fold, and append a point per active metric to `series`.

        `now` is the time since the start of the test in seconds; it also becomes
        `elapsed`, the duration counter rates are computed over.
        """
        self.fold()
        seconds = now - (self._last_tick if self._last_tick is not None else 0.0)
        self._last_tick = now
        self.elapsed = max(self.elapsed, now)
        for metric in self.metrics():
            if metric.interval_samples or (metric.kind == "gauge" and metric.samples):
                point = {"t": now, **metric.interval_point(seconds)}
                self.series.setdefault(metric.name, []).append(point)

    def stats(
        self,
        name_or_selector: str,
        trend_stats: Iterable[str] | None = None,
        duration: float | None = None,
    ) -> dict:
        """k6's values for one metric (trend stats default to k6's summary columns)."""
        metric = self.metric(name_or_selector)
        if duration is None:
            duration = self.elapsed
        if metric.kind == "trend":
            return metric.stats(duration, tuple(trend_stats or DEFAULT_TREND_STATS))
        return metric.stats(duration)

    # -- processes -----------------------------------------------------------------
    def snapshot(self, reset: bool = False) -> dict:
        """Picklable, JSON-able state of every metric; `reset` starts a new delta."""
        self.fold()
        snapshot = {
            "version": 1,
            "elapsed": self.elapsed,
            "metrics": {m.name: m.state() for m in self._metrics.values()},
            "submetrics": {s.name: s.state() for s in self._submetrics.values()},
            "checks": [[g, c, p, f] for (g, c), (p, f) in self.checks.items()],
            "groups": list(self.groups),
        }
        if reset:
            for metric in self.metrics():
                metric.reset()
            self.checks = {}
        return snapshot

    def merge(self, snapshot: Mapping) -> None:
        """Add another registry's snapshot (counters, rates, trends add up exactly)."""
        self.fold()
        self.elapsed = max(self.elapsed, snapshot.get("elapsed", 0.0))
        for name, state in snapshot["metrics"].items():
            if name not in self._metrics:
                self._create(name, state["kind"], state["contains"])
            self._metrics[name].merge_state(state)
        for selector, state in snapshot["submetrics"].items():
            self.submetric(selector).merge_state(state)
        for group, check, passes, fails in snapshot["checks"]:
            tally = self.checks.setdefault((group, check), [0, 0])
            tally[0] += passes
            tally[1] += fails
        for path in snapshot["groups"]:
            self._note_group(path)
