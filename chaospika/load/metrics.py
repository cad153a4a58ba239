"""The metrics registry: k6's metric kinds (counter, gauge, rate, trend), cheap to record.

Hot path: `Registry.add(name, value, tags)` appends `value` to a plain list. The lists
are folded into each metric's state in slices of at most `FOLD_SLICE` values
(`Registry.fold_some`, which the runner calls every few tens of milliseconds), and
completely before any read, so a request costs a few list appends and no fold stalls
the event loop for long. Sub-metrics (`name{tag:value}`) exist only for selectors that
thresholds reference, and only metrics that have them look at the tags.

Sums add values one by one in the order recorded, as k6 does (100 x 0.1 is
9.99999999999998, not 10): a counter's count and a trend's avg equal k6's bit for bit.
Trends keep their values exactly (k6's percentiles, bit for bit) up to `EXACT_LIMIT`
values (8 bytes each; 50,000 is about 50 ms of work to leave, once per trend), then
move to HDR histograms: values recorded in thousandths of
the metric's unit (microseconds for time metrics) with 3 significant digits, up to 24
hours. Past EXACT_LIMIT a percentile is read at the centre of its bucket, so it is
within `HDR_RELATIVE_ERROR` of k6's (relative), plus half a thousandth of the unit.
`snapshot()` / `merge()` combine registries of several processes exactly: merged counts,
sums, minima, maxima and histogram buckets equal those of one registry that saw
everything.
"""

import itertools
import math
import operator
import re
import sys
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import reduce
from itertools import accumulate, compress
from typing import Any

from hdrh.histogram import HdrHistogram

from chaospika.load.errors import ScenarioError

__all__ = [
    "BUILTIN_METRICS",
    "BUILTIN_SUBMETRICS",
    "DEFAULT_TREND_STATS",
    "EXACT_LIMIT",
    "FOLD_SLICE",
    "HDR_DIGITS",
    "HDR_HIGHEST",
    "HDR_RELATIVE_ERROR",
    "KINDS",
    "Metric",
    "Registry",
    "canonical_selector",
    "hdr_index",
    "parse_selector",
    "trend_stat",
]

KINDS = ("counter", "gauge", "rate", "trend")
DEFAULT_TREND_STATS = ("avg", "min", "med", "max", "p(90)", "p(95)")
EXACT_LIMIT = 50_000  # trends keep raw values (exact k6 percentiles) up to this count
HDR_RELATIVE_ERROR = 2**-11  # half a bucket of a 3-digit HDR histogram (0.049 %)
SCALE = 1000.0  # HDR units per metric unit: microseconds for millisecond trends
HDR_HIGHEST = 86_400_000_000  # 24 hours in microseconds
HDR_DIGITS = 3
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
_PERCENTILE = re.compile(r"p\((\d+(?:\.\d+)?)\)")


def parse_selector(
    field: str, selector: str
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Split `name{k:v,...}` into the name and its tag pairs (k6's parsing rules)."""
    if not isinstance(selector, str) or not selector.strip():
        raise ScenarioError(field, f"expected a metric name, got {selector!r}")
    opening, closing = selector.find("{"), selector.rfind("}")
    if opening == -1 and closing == -1:
        return selector, ()
    if opening == -1 or closing < opening or closing != len(selector) - 1:
        raise ScenarioError(field, f"malformed metric selector {selector!r}")
    pairs = []
    for part in selector[opening + 1 : closing].split(","):
        key, sep, value = part.partition(":")
        if not sep or not value:
            raise ScenarioError(
                field,
                f"malformed tag {part.strip()!r} in {selector!r} (expected key:value)",
            )
        pairs.append((key.strip().strip("\"'"), value.strip().strip("\"'")))
    return selector[:opening], tuple(pairs)


def canonical_selector(selector: str) -> str:
    """k6's name of a sub-metric: spaces inside the braces' ends trimmed, no more.

    `http_reqs{ name : "login" }` is `http_reqs{name : "login"}`, as k6 1.1.0 writes it.
    """
    opening = selector.find("{")
    if opening < 0 or not selector.endswith("}"):
        return selector
    return selector[: opening + 1] + selector[opening + 1 : -1].strip() + "}"


def _tag_text(value: Any) -> str:
    """A tag value as k6 sees it: a string (booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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


def _new_hdr() -> HdrHistogram:
    return HdrHistogram(1, HDR_HIGHEST, HDR_DIGITS)


_REFERENCE = _new_hdr()
_MASK = _REFERENCE.sub_bucket_mask
_HALF_MAGNITUDE = _REFERENCE.sub_bucket_half_count_magnitude
_HALF = _REFERENCE.sub_bucket_half_count
_LINEAR = _REFERENCE.sub_bucket_count  # below it, a value's index is the value


def hdr_index(units: int) -> int:
    """Counts-array index of a non-negative integer value (hdrh's layout)."""
    bucket = (units | _MASK).bit_length() - _HALF_MAGNITUDE - 1
    return ((bucket + 1) << _HALF_MAGNITUDE) + (units >> bucket) - _HALF


def _bucket_center(index: int) -> float:
    """Middle of the integer values that share counts-array slot `index`."""
    bucket = max((index >> _HALF_MAGNITUDE) - 1, 0)
    low = _REFERENCE.get_value_from_index(index)
    return low + ((1 << bucket) - 1) / 2


def _hdr_record(histogram: HdrHistogram, counts: Mapping[int, int]) -> None:
    """Add non-negative integer values with their counts, keeping hdrh's totals."""
    if not counts:
        return
    top = max(counts)
    if top > HDR_HIGHEST:  # beyond 24 h: counted in the last bucket (max stays exact)
        clamped: Counter = Counter()
        for units, count in counts.items():
            clamped[min(units, HDR_HIGHEST)] += count
        counts, top = clamped, HDR_HIGHEST
    slots = histogram.counts
    for units, count in counts.items():
        slots[units if units < _LINEAR else hdr_index(units)] += count
    histogram.total_count += sum(counts.values())
    histogram.max_value = max(histogram.max_value, top)


def _hdr_buckets(histogram: HdrHistogram) -> tuple[list[float], list[int]]:
    """Centres (in HDR units) and counts of the non-empty slots, ascending."""
    counts = histogram.counts[:]
    indexes = list(compress(range(len(counts)), counts))
    return [_bucket_center(i) for i in indexes], [counts[i] for i in indexes]


def _units(batch: list, low: float, high: float) -> list[int] | Counter:
    """Finite values in HDR units (rounded): a list, or a Counter if that is cheaper.

    `low`/`high` are the values' min and max. Either result feeds `Counter.update`,
    which counts a list in C.
    """
    if low == high:  # e.g. connect times of reused connections: all zero
        return Counter({round(low * SCALE): len(batch)})
    zeros = batch.count(0)
    if zeros * 2 > len(batch):
        rest = list(filter(None, batch))
        counts = _quantize(rest, min(rest), max(rest))
        counts[0] += zeros
        return counts
    if low >= 0:  # int(x + 0.5) rounds non-negative values, and is fast
        return [int(value * SCALE + 0.5) for value in batch]
    return [round(value * SCALE) for value in batch]


def _quantize(batch: list, low: float, high: float) -> Counter:
    """Count finite values in HDR units (rounded); `low`/`high`: their min and max."""
    units = _units(batch, low, high)
    return units if isinstance(units, Counter) else Counter(units)


def in_order_sum(values: Iterable[float], start: float = 0.0) -> float:
    """start + v1 + v2 + ... added one by one, as k6 (Go) adds: no compensation."""
    if _PLAIN_SUM:  # the builtin adds doubles in order, in C: 10x faster
        return sum(values, start)
    return reduce(operator.add, values, start)


# Before 3.12 `sum` adds floats one by one in a C double; 3.12 compensates (Neumaier)
_PLAIN_SUM = sys.version_info < (3, 12)


def _finite(batch: list) -> list:
    """The batch without NaN and infinities."""
    try:
        if math.isfinite(sum(batch)):  # any summation is finite iff the values are
            return batch
    except OverflowError:  # ints too large for a float
        pass
    return [value for value in batch if math.isfinite(value)]


def _interpolate(
    value_at: Callable[[int], float], count: int, fraction: float
) -> float:
    """k6's percentile: linear interpolation between the ranks around p*(n-1)."""
    position = min(max(fraction, 0.0), 1.0) * (count - 1)
    low = math.floor(position)
    below, above = value_at(low), value_at(math.ceil(position))
    return below + (above - below) * (position - low)


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
            point["p(95)"] = _interpolate(at, n, 0.95) if n else 0.0
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


def _matches(found: Any, expected: str) -> bool:
    """True if a sample's tag value equals a selector's (compared as k6 text)."""
    return found == expected or (
        found is not None and type(found) is not str and _tag_text(found) == expected
    )


def _route_entry(tags: tuple, append: Callable) -> tuple:
    """(key, expected, append) for one tag; (None, None, feed) for several."""
    if len(tags) == 1:
        return (*tags[0], append)

    def feed(value: float, sample_tags: Mapping) -> None:
        for key, expected in tags:
            if not _matches(sample_tags.get(key), expected):
                return
        append(value)

    return None, None, feed


_CLASSES = {
    "counter": CounterMetric,
    "gauge": GaugeMetric,
    "rate": RateMetric,
    "trend": TrendMetric,
}


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
