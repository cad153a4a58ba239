"""Folding in slices: bounded work per `fold_some` call, the same state as one fold."""

import math
import random

import pytest
from hdrh.histogram import HdrHistogram

from chaospika.loadengine import metrics
from chaospika.loadengine.percentiles import HDR_DIGITS, HDR_HIGHEST
from chaospika.loadengine.registry import FOLD_SLICE, Registry

SMALL_LIMIT = 4096  # these tests cover HDR mode too: trends leave exact mode sooner


@pytest.fixture(autouse=True)
def small_exact_limit(monkeypatch):
    monkeypatch.setattr(metrics, "EXACT_LIMIT", SMALL_LIMIT)


TAGS = ({"expected_response": True}, {"expected_response": False})


def record_second(registry: Registry, rng: random.Random, count: int) -> None:
    """Values like a second of HTTP load, exact binary fractions (sums stay exact)."""
    for _ in range(count):
        tags = rng.choice(TAGS)
        duration = rng.randrange(1, 400_000) / 256
        registry.add("http_reqs", 1.0, tags)
        registry.add("http_req_duration", duration, tags)
        registry.add("http_req_blocked", 0.0, tags)
        registry.add("http_req_sending", rng.choice((0.0, 0.0, 0.0, 0.5)), tags)
        registry.add("http_req_failed", float(not tags["expected_response"]), tags)
        registry.add("data_received", float(rng.randrange(100, 300)), tags)
        registry.add("vus", float(rng.randrange(1, 50)), tags)
        registry.add("drift", rng.randrange(-5000, 5000) / 64, tags)
    registry.add("drift", math.nan)


def fresh() -> Registry:
    registry = Registry()
    registry.define("drift", "trend")
    registry.submetric("http_req_duration{expected_response:false}")
    return registry


def test_a_slice_folds_at_most_its_budget_oldest_values_first():
    registry = fresh()
    record_second(registry, random.Random(1), 3000)
    pending = start = registry.pending
    assert pending > 10 * 700
    calls = 0
    while registry.pending:
        folded = registry.fold_some(700)
        calls += 1
        assert 0 < folded <= 700
        assert registry.pending == pending - folded  # exactly that much work
        pending = registry.pending
    assert calls == math.ceil(start / 700)  # each slice used its whole budget
    assert registry.fold_some(700) == 0


def test_a_slice_splits_a_long_pending_list():
    registry = Registry()
    duration = registry.metric("http_req_duration")
    for value in range(3 * FOLD_SLICE):
        registry.add("http_req_duration", float(value))
    assert registry.fold_some() == FOLD_SLICE
    assert duration.samples == FOLD_SLICE and len(duration.pending) == 2 * FOLD_SLICE
    assert duration.min == 0.0 and duration.max == FOLD_SLICE - 1  # oldest first


def test_folding_in_slices_gives_the_state_of_one_fold():
    sliced, whole = fresh(), fresh()
    rng_sliced, rng_whole = random.Random(7), random.Random(7)
    slice_rng = random.Random(3)
    for second in range(1, 4):  # past SMALL_LIMIT: histograms too
        record_second(sliced, rng_sliced, 2000)
        record_second(whole, rng_whole, 2000)
        while sliced.fold_some(slice_rng.randrange(1, 3000)):
            pass
        sliced.tick(float(second))
        whole.tick(float(second))
    assert sliced.metric("http_req_duration").count > SMALL_LIMIT
    assert sliced.snapshot() == whole.snapshot()
    assert sliced.series == whole.series
    for name in ("http_req_duration", "drift", "http_req_sending"):
        stats = ("avg", "min", "med", "max", "p(90)", "p(99.9)", "count")
        assert sliced.stats(name, stats) == whole.stats(name, stats)


def test_reads_fold_what_the_slices_left():
    registry = Registry()
    for value in (3.0, 1.0, 2.0):
        registry.add("http_req_duration", value)
    assert registry.fold_some(1) == 1
    assert registry.stats("http_req_duration", ["count", "max", "med"]) == {
        "count": 3,
        "max": 3.0,
        "med": 2.0,
    }
    assert registry.pending == 0


def test_histogram_slots_match_hdrhistogram_on_both_sides_of_the_linear_range():
    units = [0, 1, 2047, 2048, 2049, 4095, 123_456, 10**9]
    registry = Registry()
    for value in units * (SMALL_LIMIT // len(units) + 1):
        registry.add("http_req_duration", value / 1000)
    registry.fold_some(FOLD_SLICE)
    registry.fold()
    reference = HdrHistogram(1, HDR_HIGHEST, HDR_DIGITS)
    for value in units:
        reference.record_value(value, SMALL_LIMIT // len(units) + 1)
    histogram = registry.metric("http_req_duration").positive
    assert list(histogram.counts) == list(reference.counts)
    assert histogram.total_count == reference.total_count
