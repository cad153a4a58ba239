"""k6's metric kinds: counter, gauge, rate and trend, cheap to record (k6's metrics).

Each `Metric` takes values on a plain list (`append`) and folds them into its
state in slices (`fold`); `stats()` gives k6's values, `state()` / `merge_state()`
carry them between processes, `interval_point()` one second of the time series.
Trend percentiles and in-order sums are in percentiles.py, selectors and tags in
tags.py, the registry that holds every metric of a run in registry.py.
"""

import math
import re
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from itertools import accumulate

from hdrh.histogram import HdrHistogram

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.percentiles import (
    EXACT_LIMIT,
    SCALE,
    _finite,
    _hdr_buckets,
    _hdr_record,
    _interpolate,
    _new_hdr,
    _quantize,
    _units,
    in_order_sum,
)

__all__ = [
    "DEFAULT_TREND_STATS",
    "KINDS",
    "CounterMetric",
    "GaugeMetric",
    "Metric",
    "RateMetric",
    "TrendMetric",
    "trend_stat",
]

KINDS = ("counter", "gauge", "rate", "trend")
DEFAULT_TREND_STATS = ("avg", "min", "med", "max", "p(90)", "p(95)")
_PERCENTILE = re.compile(r"p\((\d+(?:\.\d+)?)\)")


def _ieee_div(numerator: float, denominator: float) -> float:
    """Division with IEEE results for a zero denominator, as Go computes it."""
    if denominator:
        return numerator / denominator
    if numerator == 0 or math.isnan(numerator):
        return math.nan
    return math.copysign(math.inf, numerator)


class Metric:
    """One metric or sub-metric: its kind, what it holds, and values not yet folded."""

    kind = ""

    def __init__(
        self, name: str, contains: str, parent: "Metric | None" = None, tags=()
    ) -> None:
        self.name = name
        self.contains = contains
        self.parent = parent
        self.tags: tuple[tuple[str, str], ...] = tuple(tags)
        self.pending: list = []
        self.append = self.pending.append
        self.samples = 0
        self.interval_samples = 0

    @property
    def is_time(self) -> bool:
        """True for trends of durations in milliseconds."""
        return self.contains == "time"

    @property
    def empty(self) -> bool:
        """True while no value has been recorded (pending values count)."""
        return not self.samples and not self.pending

    def fold(self, limit: int | None = None) -> int:
        """Move the pending values (the oldest `limit` of them) into the state.

        Returns how many values were folded. Folding in slices gives the state
        folding at once would: every kind only adds, counts, or keeps extremes.
        """
        pending = self.pending
        if not pending or limit is not None and limit <= 0:
            return 0
        if limit is None or len(pending) <= limit:
            batch = pending[:]
            pending.clear()  # the same list: `append` stays bound to it
        else:
            batch = pending[:limit]
            del pending[:limit]
        self.samples += len(batch)
        self.interval_samples += len(batch)
        self._absorb(batch)
        return len(batch)

    def state(self) -> dict:
        """The folded state as a JSON-friendly dict."""
        self.fold()
        return {"kind": self.kind, "contains": self.contains, "samples": self.samples}

    def merge_state(self, state: Mapping) -> None:
        """Add another registry's state of the same metric."""
        self.fold()
        self.samples += state["samples"]
        self.interval_samples += state["samples"]

    def reset(self) -> None:
        """Forget every value; the definition and the recording list stay."""
        self.fold()
        pending = self.pending
        self.__init__(self.name, self.contains, self.parent, self.tags)
        self.pending, self.append = pending, pending.append

    def interval_point(self, seconds: float) -> dict:
        """Aggregates of the values folded since the previous tick; starts a new one."""
        self.interval_samples = 0
        return {}

    def _absorb(self, batch: list) -> None:
        raise NotImplementedError


class CounterMetric(Metric):
    """Sum of values; `rate` is the sum per second of test time (k6 Counter)."""

    kind = "counter"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.total = 0.0
        self.interval_total = 0.0

    def _absorb(self, batch: list) -> None:
        self.total = in_order_sum(batch, self.total)
        self.interval_total = sum(batch, self.interval_total)  # per-second series only

    def stats(self, duration: float) -> dict:
        """k6's summary values: count and rate (0 for a zero duration)."""
        self.fold()
        return {"count": self.total, "rate": self.total / duration if duration else 0.0}

    def threshold_values(self, duration: float) -> dict:
        """Values thresholds compare, as k6 computes them (rate = count / duration)."""
        self.fold()
        return {"count": self.total, "rate": _ieee_div(self.total, duration)}

    def state(self) -> dict:
        return {**super().state(), "total": self.total}

    def merge_state(self, state: Mapping) -> None:
        super().merge_state(state)
        self.total += state["total"]
        self.interval_total += state["total"]

    def interval_point(self, seconds: float) -> dict:
        point = {
            "count": self.interval_total,
            "rate": self.interval_total / seconds if seconds > 0 else 0.0,
        }
        self.interval_total = 0.0
        super().interval_point(seconds)
        return point


class GaugeMetric(Metric):
    """Last value with min and max (k6 Gauge; like k6, max starts at 0)."""

    kind = "gauge"
    merge_takes_max = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.value = 0.0
        self.min = 0.0
        self.max = 0.0

    def _absorb(self, batch: list) -> None:
        self._update(
            batch[-1], min(batch), max(batch), first=self.samples == len(batch)
        )

    def _update(self, value: float, low: float, high: float, first: bool) -> None:
        self.value = value
        self.min = low if first else min(self.min, low)
        self.max = max(self.max, high)

    def stats(self, duration: float = 0.0) -> dict:
        """k6's summary values: value (last), min and max."""
        self.fold()
        return {"value": self.value, "min": self.min, "max": self.max}

    def threshold_values(self, duration: float) -> dict:
        """Values thresholds compare: the last value."""
        self.fold()
        return {"value": self.value}

    def state(self) -> dict:
        return {
            **super().state(),
            "value": self.value,
            "min": self.min,
            "max": self.max,
        }

    def merge_state(self, state: Mapping) -> None:
        if not state["samples"]:
            return
        first = self.empty
        super().merge_state(state)
        value = state["value"]
        if self.merge_takes_max and not first:
            value = max(self.value, value)
        self._update(value, state["min"], state["max"], first=first)

    def interval_point(self, seconds: float) -> dict:
        super().interval_point(seconds)
        return {"value": self.value}


class RateMetric(Metric):
    """Share of non-zero values (k6 Rate)."""

    kind = "rate"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.passes = 0
        self.interval_passes = 0

    def _absorb(self, batch: list) -> None:
        passes = len(batch) - batch.count(0)
        self.passes += passes
        self.interval_passes += passes

    @property
    def rate(self) -> float:
        """Passes over total; 0 without samples."""
        self.fold()
        return self.passes / self.samples if self.samples else 0.0

    def stats(self, duration: float = 0.0) -> dict:
        """k6's summary values: rate, passes and fails."""
        rate = self.rate
        return {
            "rate": rate,
            "passes": self.passes,
            "fails": self.samples - self.passes,
        }

    def threshold_values(self, duration: float) -> dict:
        """Values thresholds compare; none without samples (k6 then passes them)."""
        self.fold()
        return {"rate": self.passes / self.samples} if self.samples else {}

    def state(self) -> dict:
        return {**super().state(), "passes": self.passes}

    def merge_state(self, state: Mapping) -> None:
        super().merge_state(state)
        self.passes += state["passes"]
        self.interval_passes += state["passes"]

    def interval_point(self, seconds: float) -> dict:
        total = self.interval_samples
        point = {
            "passes": self.interval_passes,
            "total": total,
            "rate": self.interval_passes / total if total else 0.0,
        }
        self.interval_passes = 0
        super().interval_point(seconds)
        return point


class TrendMetric(Metric):
    """Distribution of values: avg, min, med, max, p(N), count (k6 Trend)."""

    kind = "trend"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.raw: array | None = array("d")
        self.positive: HdrHistogram | None = None
        self.negative: HdrHistogram | None = None
        self._distribution: tuple[list[float], list[int]] | None = None
        self._interval = Counter()
        self._interval_total = 0.0
        self._interval_max = -math.inf

    @property
    def count(self) -> int:
        """Number of values recorded."""
        self.fold()
        return self.samples

    def _absorb(self, batch: list) -> None:
        size = len(batch)
        batch = _finite(batch)
        if len(batch) < size:  # NaN and infinities cannot be summarised: dropped
            self.samples -= size - len(batch)
            self.interval_samples -= size - len(batch)
            if not batch:
                return
        low, high = min(batch), max(batch)
        units = _units(batch, low, high)
        self.total = in_order_sum(batch, self.total)
        self.min = min(self.min, low)
        self.max = max(self.max, high)
        self._interval.update(units)
        self._interval_total = sum(batch, self._interval_total)  # series only
        self._interval_max = max(self._interval_max, high)
        self._distribution = None
        if self.raw is not None and len(self.raw) + len(batch) <= EXACT_LIMIT:
            self.raw.extend(batch)
            return
        self._leave_exact_mode()
        self._record_units(units if isinstance(units, Counter) else Counter(units))

    def _leave_exact_mode(self) -> None:
        """Move the exact values into the histograms (past EXACT_LIMIT values)."""
        if self.raw is not None:
            raw, self.raw = self.raw, None
            if raw:
                self._record_units(_quantize(raw, min(raw), max(raw)))

    def _record_units(self, counts: Counter) -> None:
        positive, negative = counts, None
        if counts and min(counts) < 0:
            positive = {units: n for units, n in counts.items() if units >= 0}
            negative = {-units: n for units, n in counts.items() if units < 0}
        if positive:
            self.positive = self.positive or _new_hdr()
            _hdr_record(self.positive, positive)
        if negative:
            self.negative = self.negative or _new_hdr()
            _hdr_record(self.negative, negative)

    def _sorted_values(self) -> tuple[list[float], list[int]]:
        """Ascending values (or bucket centres) with cumulative counts."""
        if self._distribution is None:
            if self.raw is not None:
                values = sorted(self.raw)  # kept sorted: the next sort only merges
                self.raw = array("d", values)
                cumulative = list(range(1, len(values) + 1))
            else:
                values, counts = [], []
                if self.negative is not None:
                    centers, found = _hdr_buckets(self.negative)
                    values += [-c / SCALE for c in reversed(centers)]
                    counts += list(reversed(found))
                if self.positive is not None:
                    centers, found = _hdr_buckets(self.positive)
                    values += [c / SCALE for c in centers]
                    counts += found
                cumulative = list(accumulate(counts))
            self._distribution = (values, cumulative)
        return self._distribution

    def _value_at_rank(self, rank: int) -> float:
        if rank <= 0:
            return self.min
        if rank >= self.samples - 1:
            return self.max
        values, cumulative = self._sorted_values()
        value = values[bisect_right(cumulative, rank)]
        return min(max(value, self.min), self.max)

    def percentile(self, fraction: float) -> float:
        """k6's P(fraction): 0 without values, the value itself with one value."""
        self.fold()
        if not self.samples:
            return 0.0
        if self.samples == 1:
            return self.min
        return _interpolate(self._value_at_rank, self.samples, fraction)

    @property
    def avg(self) -> float:
        """Mean value; 0 without values."""
        self.fold()
        return self.total / self.samples if self.samples else 0.0

    def stat(self, name: str) -> float:
        """One k6 trend stat by name: avg, min, med, max, count or p(N)."""
        return trend_stat(name)(self)

    def stats(self, duration: float = 0.0, trend_stats: Iterable[str] = ()) -> dict:
        """The given k6 trend stats (default: k6's summary columns)."""
        return {name: self.stat(name) for name in (trend_stats or DEFAULT_TREND_STATS)}

    def state(self) -> dict:
        encode = lambda h: None if h is None else h.encode().decode("ascii")
        return {
            **super().state(),
            "total": self.total,
            "min": self.min if self.samples else None,
            "max": self.max if self.samples else None,
            "raw": None if self.raw is None else list(self.raw),
            "positive": encode(self.positive),
            "negative": encode(self.negative),
        }

    def merge_state(self, state: Mapping) -> None:
        if not state["samples"]:
            return
        super().merge_state(state)
        self.total += state["total"]
        self._interval_total += state["total"]
        self.min = min(self.min, state["min"])
        self.max = max(self.max, state["max"])
        self._interval_max = max(self._interval_max, state["max"])
        self._distribution = None
        if state["raw"] is not None:
            raw = state["raw"]
            units = _quantize(raw, min(raw), max(raw))
            self._interval.update(units)
            if (
                self.raw is not None
                and len(self.raw) + len(state["raw"]) <= EXACT_LIMIT
            ):
                self.raw.extend(state["raw"])
                return
            self._leave_exact_mode()
            self._record_units(units)
            return
        self._leave_exact_mode()
        for key, sign in (("positive", 1), ("negative", -1)):
            if state[key] is not None:
                self._merge_histogram(key, HdrHistogram.decode(state[key]), sign)

    def _merge_histogram(self, key: str, other: HdrHistogram, sign: int) -> None:
        mine = getattr(self, key) or _new_hdr()
        setattr(self, key, mine)
        mine.add(other)
        mine.max_value = max(mine.max_value, other.max_value)
        centers, counts = _hdr_buckets(other)
        self._interval.update({sign * round(c): n for c, n in zip(centers, counts)})

    def interval_point(self, seconds: float) -> dict:
        count = self.interval_samples
        point = {"count": count, "avg": 0.0, "p(95)": 0.0, "max": 0.0}
        if count:
            keys = sorted(self._interval)
            cumulative = list(accumulate(self._interval[k] for k in keys))
            n = cumulative[-1]
            at = lambda r: keys[bisect_right(cumulative, r)] / SCALE
            point["avg"] = self._interval_total / count
            p95 = _interpolate(at, n, 0.95) if n else 0.0
            # units are rounded to 1/SCALE: never above the exact maximum
            point["p(95)"] = min(p95, self._interval_max)
            point["max"] = self._interval_max
        self._interval = Counter()
        self._interval_total = 0.0
        self._interval_max = -math.inf
        super().interval_point(seconds)
        return point


def trend_stat(
    name: str, field: str = "summaryTrendStats"
) -> Callable[[TrendMetric], float]:
    """The reader of one trend stat; ScenarioError for names k6 rejects."""
    simple = {
        "avg": lambda t: t.avg,
        "min": lambda t: t.min if t.count else 0.0,
        "max": lambda t: t.max if t.count else 0.0,
        "med": lambda t: t.percentile(0.5),
        "count": lambda t: t.count,
    }
    if name in simple:
        return simple[name]
    match = _PERCENTILE.fullmatch(name) if isinstance(name, str) else None
    if not match:
        raise ScenarioError(field, f"invalid trend stat {name!r}, unknown format")
    fraction = float(match.group(1)) / 100
    if fraction > 1:
        raise ScenarioError(
            field,
            f"invalid percentile trend stat {name!r}, provide a number between 0 and 100",
        )
    return lambda t: t.percentile(fraction)


_CLASSES = {
    "counter": CounterMetric,
    "gauge": GaugeMetric,
    "rate": RateMetric,
    "trend": TrendMetric,
}
