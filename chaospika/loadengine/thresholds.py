"""k6 thresholds: `{"metric{tag:value}": ["p(95)<500", {...}]}`, judged as k6 1.1.0 does.

Semantics copied from k6 (and checked against it, see tests/load/test_thresholds.py):
- an expression is `aggregation operator number`; aggregations per metric kind are
  counter: count, rate; gauge: value; rate: rate; trend: avg, min, max, med, p(N);
  operators are <, <=, >, >=, ==, ===, !=;
- a counter's `rate` is its count per second of test time so far;
- a metric without samples reads as 0 (trend stats, counter count and rate, gauge
  value), except a rate metric, whose thresholds then pass;
- during the run (`check_abort`) metrics without samples are skipped; a failing
  threshold with `abortOnFail` stops the test once `delayAbortEval` has elapsed;
- at the end (`final`) every threshold is judged;
- numbers are read like Go's ParseFloat (`1_000`, `0x1p4`), unknown keys of a
  threshold object are ignored (with a warning), as k6 does. A percentile outside
  0..100 or NaN is a ScenarioError here, where k6 1.1.0 accepts it and then crashes
  (exit 109) when it evaluates it.
"""

import logging
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.tags import parse_selector
from chaospika.loadengine.units import parse_duration
from chaospika.loadengine.validate import require_bool

__all__ = [
    "OPERATORS",
    "Threshold",
    "ThresholdSet",
    "parse_expression",
    "parse_thresholds",
    "thresholds_passed",
]

logger = logging.getLogger("chaostoolkit")

OPERATORS = ("<=", "<", ">=", ">", "===", "==", "!=")  # k6's scanning order
_COMPARE = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "===": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
}
_KEYWORDS = ("value", "count", "rate", "avg", "min", "med", "max")
AGGREGATIONS = {
    "counter": ("count", "rate"),
    "gauge": ("value",),
    "rate": ("rate",),
    "trend": ("avg", "min", "max", "med", "p"),
}
_OPTION_KEYS = {"threshold", "abortOnFail", "delayAbortEval"}


def _underscores_ok(text: str) -> bool:
    """Go's underscoreOK: each '_' between two digits (or a base prefix and a digit)."""
    body = text.lstrip("+-")
    hexadecimal = body[:2].lower() == "0x"
    saw = "0" if body[:2].lower() in ("0x", "0b", "0o") else "^"
    for char in body[2:] if saw == "0" else body:
        if char.isdigit() or hexadecimal and char.lower() in "abcdef":
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def _go_float(text: str) -> float | None:
    """Parse a number the way Go's strconv.ParseFloat does (None if it would fail)."""
    if not text or text != text.strip():
        return None
    if "_" in text:
        if not _underscores_ok(text):
            return None
        text = text.replace("_", "")
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float.fromhex(text) if "p" in text.lower() else None
    except ValueError:
        return None


def _number_text(number: float) -> str:
    """Shortest text of a number, as Go's %g prints a percentile ("95", "99.9")."""
    return str(int(number)) if number.is_integer() else repr(number)


@dataclass(eq=False)
class Threshold:
    """One threshold expression on one metric or sub-metric."""

    metric: str
    source: str
    method: str
    percentile: float | None
    operator: str
    value: float
    abort_on_fail: bool = False
    delay_abort_eval: float | None = None
    last_failed: bool = False

    @property
    def stat(self) -> str:
        """The stat compared: "avg", "count", ..., or "p(95)"."""
        if self.method == "p":
            return f"p({_number_text(self.percentile)})"
        return self.method

    def observe(self, registry: Registry, elapsed: float) -> float | None:
        """The metric's value for this threshold; None when k6 has none (empty rate)."""
        metric = registry.metric(self.metric)
        if self.method == "p":
            return metric.percentile(self.percentile / 100)
        if metric.kind == "trend":
            return metric.stat(self.method)
        return metric.threshold_values(elapsed).get(self.method)

    def evaluate(self, registry: Registry, elapsed: float) -> bool:
        """Judge the threshold now (elapsed: seconds of test time); remember it."""
        observed = self.observe(registry, elapsed)
        passed = observed is None or _COMPARE[self.operator](observed, self.value)
        self.last_failed = not passed
        return passed

    def aborts(self, elapsed: float) -> bool:
        """True if this threshold, failing now, stops the test (abortOnFail)."""
        if not self.abort_on_fail:
            return False
        return self.delay_abort_eval is None or self.delay_abort_eval < elapsed


class ThresholdSet(list):
    """All thresholds of a test (a list of Threshold) with k6's run-time checks."""

    def check_abort(self, registry: Registry, elapsed: float) -> Threshold | None:
        """Live check (about once a second): the first threshold that aborts, if any.

        Like k6 during a run, metrics without samples are not judged yet.
        """
        aborting = None
        for threshold in self:
            if registry.metric(threshold.metric).empty:
                continue
            if not threshold.evaluate(registry, elapsed) and threshold.aborts(elapsed):
                aborting = aborting or threshold
        return aborting

    def final(
        self, registry: Registry, elapsed: float | None = None
    ) -> dict[str, dict[str, bool]]:
        """Judge every threshold at the end: {metric: {expression: passed}}."""
        if elapsed is None:
            elapsed = registry.elapsed
        result: dict[str, dict[str, bool]] = {}
        for threshold in self:
            passed = threshold.evaluate(registry, elapsed)
            result.setdefault(threshold.metric, {})[threshold.source] = passed
        return result

    @property
    def passed(self) -> bool:
        """True if no threshold failed at its last evaluation."""
        return not any(threshold.last_failed for threshold in self)


def thresholds_passed(result: Mapping[str, Mapping[str, bool]]) -> bool:
    """True if every expression of a `final()` result passed."""
    return all(all(per_metric.values()) for per_metric in result.values())


def parse_expression(field: str, source: Any) -> tuple[str, float | None, str, float]:
    """Split `p(95) < 500` into (method, percentile, operator, value) like k6."""
    if not isinstance(source, str):
        raise ScenarioError(field, f"expected a threshold expression, got {source!r}")
    for token in OPERATORS:
        left, found, right = source.partition(token)
        if found:
            break
    else:
        raise ScenarioError(
            field,
            f"malformed threshold expression {source!r} (expected e.g. 'p(95)<500' "
            f"with one of {' '.join(OPERATORS)})",
        )
    method, value_text = left.strip(), right.strip()
    percentile = None
    if method not in _KEYWORDS:
        inner = method[2:-1] if method.startswith("p(") and method.endswith(")") else ""
        percentile = _go_float(inner)
        if percentile is None or not 0 <= percentile <= 100:
            raise ScenarioError(
                field,
                f"unknown aggregation {method!r} in {source!r} (expected one of "
                f"{', '.join(_KEYWORDS)} or p(N) with N between 0 and 100)",
            )
        method = "p"
    value = _go_float(value_text)
    if value is None:
        raise ScenarioError(field, f"expected a number after {token!r} in {source!r}")
    return method, percentile, token, value


def _parse_item(field: str, key: str, kind: str, item: Any) -> Threshold:
    abort, delay, source, source_field = False, None, item, field
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - _OPTION_KEYS)
        if unknown:  # k6 ignores them too
            logger.warning(
                "%s: unknown threshold option %s ignored (known: %s)",
                field,
                ", ".join(map(repr, unknown)),
                ", ".join(sorted(_OPTION_KEYS)),
            )
        source, source_field = item.get("threshold"), f"{field}.threshold"
        abort = require_bool(f"{field}.abortOnFail", item.get("abortOnFail", False))
        if item.get("delayAbortEval") is not None:
            delay = parse_duration(
                f"{field}.delayAbortEval", item["delayAbortEval"], per_second=1000.0
            )
    elif not isinstance(item, str):
        raise ScenarioError(
            field, f"expected an expression or {{'threshold': ...}}, got {item!r}"
        )
    method, percentile, token, value = parse_expression(source_field, source)
    if method not in AGGREGATIONS[kind]:
        supported = ", ".join(AGGREGATIONS[kind])
        raise ScenarioError(
            source_field,
            f"unsupported aggregation method {method} on metric of type {kind}. "
            f"supported aggregation methods for this metric are: {supported}",
        )
    return Threshold(key, source, method, percentile, token, value, abort, delay)


def parse_thresholds(
    spec: Mapping | None, registry: Registry, field: str = "thresholds"
) -> ThresholdSet:
    """Validate the spec's "thresholds" object and create the sub-metrics it names.

    Custom metrics must be defined in `registry` first; an unknown metric is a
    ScenarioError on "thresholds.<metric>".
    """
    thresholds = ThresholdSet()
    if spec is None:
        return thresholds
    if not isinstance(spec, Mapping):
        raise ScenarioError(
            field, f"expected an object of metric: [expressions], got {spec!r}"
        )
    for key, items in spec.items():
        key_field = f"{field}.{key}"
        name, tags = parse_selector(key_field, key)
        if name not in registry:
            raise ScenarioError(key_field, f"no metric named {name!r}")
        metric = registry.submetric(key, key_field) if tags else registry.metric(name)
        kind = metric.kind
        key = metric.name if tags else key  # k6's sub-metric name: inner ends trimmed
        if not isinstance(items, list):
            raise ScenarioError(
                key_field, f"expected a list of expressions, got {items!r}"
            )
        for index, item in enumerate(items):
            thresholds.append(_parse_item(f"{key_field}[{index}]", key, kind, item))
    return thresholds
