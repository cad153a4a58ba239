"""Trend values to k6's statistics: exact ranks, then HDR histograms (k6's sinks).

Sums add values one by one in the order recorded, as k6 does (100 x 0.1 is
9.99999999999998, not 10): a counter's count and a trend's avg equal k6's bit for bit.
Trends keep their values exactly (k6's percentiles, bit for bit) up to `EXACT_LIMIT`
values (8 bytes each; 50,000 is about 50 ms of work to leave, once per trend), then
move to HDR histograms: values recorded in thousandths of
the metric's unit (microseconds for time metrics) with 3 significant digits, up to 24
hours. Past EXACT_LIMIT a percentile is read at the centre of its bucket, so it is
within `HDR_RELATIVE_ERROR` of k6's (relative), plus half a thousandth of the unit.
"""

import math
import operator
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import reduce
from itertools import compress

from hdrh.histogram import HdrHistogram

__all__ = [
    "EXACT_LIMIT",
    "HDR_DIGITS",
    "HDR_HIGHEST",
    "HDR_RELATIVE_ERROR",
    "SCALE",
    "hdr_index",
    "in_order_sum",
]

EXACT_LIMIT = 50_000  # trends keep raw values (exact k6 percentiles) up to this count
HDR_RELATIVE_ERROR = 2**-11  # half a bucket of a 3-digit HDR histogram (0.049 %)
SCALE = 1000.0  # HDR units per metric unit: microseconds for millisecond trends
HDR_HIGHEST = 86_400_000_000  # 24 hours in microseconds
HDR_DIGITS = 3


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
