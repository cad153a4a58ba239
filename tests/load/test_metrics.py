"""The metrics registry: k6 kinds and stats, sub-metrics, HDR trends, exact merges."""

import json
import math
import pickle
import random

import pytest
from hdrh.histogram import HdrHistogram

from chaospika.loadengine import metrics
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.percentiles import HDR_DIGITS, HDR_HIGHEST, hdr_index
from chaospika.loadengine.registry import BUILTIN_METRICS, Registry
from chaospika.loadengine.tags import parse_selector

SMALL_LIMIT = 4096  # these tests cover HDR mode too: trends leave exact mode sooner


@pytest.fixture(autouse=True)
def small_exact_limit(monkeypatch):
    monkeypatch.setattr(metrics, "EXACT_LIMIT", SMALL_LIMIT)


ALL_STATS = ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)", "p(99.9)", "count"]


def k6_percentile(values, fraction):
    """k6 1.1.0's percentile on raw values (sorted, linear interpolation)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = ordered[math.floor(position)], ordered[math.ceil(position)]
    return low + (high - low) * (position - math.floor(position))


def trend_of(values, name="latency", is_time=True):
    registry = Registry()
    registry.define(name, "trend", is_time=is_time)
    for value in values:
        registry.add(name, value)
    return registry


def lognormal(count, seed=7):
    generator = random.Random(seed)
    return [generator.lognormvariate(0.0, 1.3) for _ in range(count)]


def test_builtin_metrics_have_k6_kinds():
    registry = Registry()
    expected = {
        "http_reqs": ("counter", "default"),
        "data_sent": ("counter", "data"),
        "dropped_iterations": ("counter", "default"),
        "vus_max": ("gauge", "default"),
        "checks": ("rate", "default"),
        "http_req_failed": ("rate", "default"),
        "http_req_duration": ("trend", "time"),
        "ws_msg_latency": ("trend", "time"),
    }
    for name, (kind, contains) in expected.items():
        metric = registry.metric(name)
        assert (metric.kind, metric.contains) == (kind, contains)
    assert len(BUILTIN_METRICS) >= 24
    assert "http_req_duration{expected_response:true}" in registry


def test_define_custom_metrics_and_reject_conflicts():
    registry = Registry()
    orders = registry.define("orders", "counter")
    assert registry.define("orders", "counter") is orders
    assert registry.define("wait_ms", "trend", is_time=True).is_time
    with pytest.raises(ScenarioError) as error:
        registry.define("orders", "trend")
    assert error.value.field == "metrics.orders"
    with pytest.raises(ScenarioError, match="already exists"):
        registry.define("wait_ms", "trend", is_time=False)
    with pytest.raises(ScenarioError) as error:
        registry.define("latency", "histogram", field="scenarios.a.metrics")
    assert error.value.field == "scenarios.a.metrics.latency"
    for bad in ["a", "a-b", "1a", "a.b", "x" * 130, 5]:  # k6 1.1.0 rejects these names
        with pytest.raises(ScenarioError, match="invalid metric name"):
            registry.define(bad, "counter")


def test_unknown_metric_is_an_error():
    registry = Registry()
    with pytest.raises(ScenarioError, match="no metric named 'nope'"):
        registry.add("nope", 1)
    with pytest.raises(ScenarioError):
        registry.stats("nope")


def test_counter_gauge_rate_stats_follow_k6():
    registry = Registry()
    for value in range(1, 11):
        registry.add("http_reqs", value)
        registry.add("checks", value % 3 == 0)
    for value in (-5, -3):
        registry.add("vus", value)
    assert registry.stats("http_reqs", duration=2.0) == {"count": 55, "rate": 27.5}
    assert registry.stats("http_reqs", duration=0) == {"count": 55, "rate": 0.0}
    assert registry.stats("checks") == {"rate": 0.3, "passes": 3, "fails": 7}
    # k6's gauge keeps the last value and starts its max at 0 (recorded from k6)
    assert registry.stats("vus") == {"value": -3, "min": -5, "max": 0}
    assert registry.stats("vus_max") == {"value": 0, "min": 0, "max": 0}


def test_rate_counts_every_non_zero_value_as_a_pass():
    registry = Registry()
    for value in [True, False, 1, 0, 0.0, 2.5, -1, math.nan]:
        registry.add("http_req_failed", value)
    assert registry.stats("http_req_failed")["passes"] == 5


def test_small_trends_are_exactly_k6():
    values = [1.5 * i for i in range(1, 11)] + [0.123, 7.77, 3.3333]
    stats = trend_of(values).stats("latency", ALL_STATS)
    assert stats["count"] == len(values)
    assert stats["min"] == min(values) and stats["max"] == max(values)
    assert stats["avg"] == pytest.approx(sum(values) / len(values), rel=1e-15)
    for name, fraction in [("med", 0.5), ("p(90)", 90 / 100), ("p(99.9)", 99.9 / 100)]:
        assert stats[name] == k6_percentile(values, fraction)
    assert trend_of([]).stats("latency", ALL_STATS) == dict.fromkeys(ALL_STATS, 0)
    assert trend_of([4.2]).stats("latency", ["p(95)", "med"]) == {
        "p(95)": 4.2,
        "med": 4.2,
    }


def test_large_trends_use_hdr_within_three_digits():
    values = lognormal(20_000)
    registry = trend_of(values)
    trend = registry.metric("latency")
    stats = registry.stats("latency", ALL_STATS)
    assert trend.raw is None and trend.positive.get_total_count() == 20_000
    assert stats["count"] == 20_000
    assert (stats["min"], stats["max"]) == (min(values), max(values))
    assert stats["avg"] == pytest.approx(sum(values) / len(values), rel=1e-12)
    for name, fraction in [("med", 0.5), ("p(90)", 0.9), ("p(99)", 0.99)]:
        assert stats[name] == pytest.approx(k6_percentile(values, fraction), rel=1e-3)


def test_trend_range_precision_and_odd_values():
    hour_ms = 3_600_000.0
    values = [0.05, 0.999, 1.0, 250.0, hour_ms] * 1000 + [hour_ms * 30]
    registry = trend_of(values)
    stats = registry.stats("latency", ["min", "med", "p(70)", "p(99)", "max"])
    assert stats["min"] == 0.05 and stats["max"] == hour_ms * 30
    assert stats["med"] == 1.0  # below 2.048 ms buckets are 1 µs wide: exact
    assert stats["p(70)"] == pytest.approx(250.0, rel=1e-3)
    assert stats["p(99)"] == pytest.approx(hour_ms, rel=1e-3)  # an hour stays in range
    negatives = trend_of([-5.0, -1.0, 0.0, 2.0] * 2000 + [math.nan, math.inf])
    stats = negatives.stats("latency", ["count", "min", "med", "p(10)", "max"])
    assert stats["count"] == 8000
    assert (stats["min"], stats["max"]) == (-5.0, 2.0)
    assert stats["p(10)"] == pytest.approx(-5.0, abs=0.01)
    assert stats["med"] == pytest.approx(-0.5, abs=0.01)


def test_hdr_index_matches_hdrhistogram():
    reference = HdrHistogram(1, HDR_HIGHEST, HDR_DIGITS)
    generator = random.Random(3)
    probes = [0, 1, 2047, 2048, 2049, 4095, 4096, HDR_HIGHEST]
    probes += [generator.randrange(HDR_HIGHEST) for _ in range(2000)]
    for units in probes:
        assert hdr_index(units) == reference.get_counts_array_index(units)


def test_submetrics_match_on_tags():
    registry = Registry()
    ok = registry.submetric("http_req_duration{status:200}")
    both = registry.submetric("http_req_duration{ status : '200', method:GET}")
    expected = registry.metric("http_req_duration{expected_response:true}")
    registry.add("http_req_duration", 10.0, {"status": 200, "method": "GET"})
    registry.add("http_req_duration", 20.0, {"status": "200", "method": "POST"})
    registry.add(
        "http_req_duration", 30.0, {"status": "404", "expected_response": True}
    )
    registry.add("http_req_duration", 40.0)
    assert ok.count == 2 and both.count == 1 and expected.count == 1
    assert registry.stats("http_req_duration{status:200}")["max"] == 20.0
    assert registry.stats("http_req_duration")["max"] == 40.0
    assert registry.metric("http_req_duration{status:200}") is ok
    assert parse_selector("f", "m{a:b, c:'d'}") == ("m", (("a", "b"), ("c", "d")))
    for bad in ["m{a}", "m{a:}", "m{a:b", "ma:b}", "m{}", "m{a:b}x"]:
        with pytest.raises(ScenarioError) as error:
            parse_selector("thresholds.x", bad)
        assert error.value.field == "thresholds.x"


def test_checks_are_tallied_per_group_and_name():
    registry = Registry()
    for ok in (True, True, False):
        registry.add("checks", ok, {"check": "status 200", "group": ""})
    registry.add("checks", False, {"check": "status 200", "group": "::orders::pay"})
    registry.add("group_duration", 5.0, {"group": "::orders::refund"})
    assert registry.checks == {
        ("", "status 200"): [2, 1],
        ("::orders::pay", "status 200"): [0, 1],
    }
    assert list(registry.groups) == ["::orders", "::orders::pay", "::orders::refund"]
    assert registry.stats("checks") == {"rate": 0.5, "passes": 2, "fails": 2}


def test_zero_and_constant_batches_fold_like_any_other():
    values = [0.0] * 900 + [0.4, 2.5] * 50 + [7.0] * 5000
    direct = trend_of(values)
    one_by_one = Registry()
    one_by_one.define("latency", "trend", is_time=True)
    for value in values:  # folded one value at a time: no batch shortcut
        one_by_one.add("latency", value)
        one_by_one.fold()
    assert (
        direct.snapshot()["metrics"]["latency"]
        == one_by_one.snapshot()["metrics"]["latency"]
    )


def test_tick_keeps_a_per_second_series():
    registry = Registry()
    for value in range(100):
        registry.add("http_reqs", 1)
        registry.add("http_req_duration", float(value))
        registry.add("http_req_failed", value < 10)
    registry.add("vus", 5)
    registry.tick(1.0)
    registry.add("http_reqs", 1)
    registry.tick(2.0)
    series = registry.series
    assert series["http_reqs"] == [
        {"t": 1.0, "count": 100, "rate": 100.0},
        {"t": 2.0, "count": 1, "rate": 1.0},
    ]
    point = series["http_req_duration"][0]
    assert point["count"] == 100 and point["avg"] == pytest.approx(49.5)
    assert point["p(95)"] == pytest.approx(k6_percentile(range(100), 0.95), rel=1e-3)
    assert series["http_req_failed"] == [
        {"t": 1.0, "passes": 10, "total": 100, "rate": 0.1}
    ]
    assert series["vus"] == [{"t": 1.0, "value": 5}, {"t": 2.0, "value": 5}]
    assert len(series["http_req_duration"]) == 1  # no point without activity
    assert registry.elapsed == 2.0


def fill(registry, values, offset=0):
    registry.define("payload", "counter")
    for index, value in enumerate(values, offset):
        tags = {"status": "200" if index % 4 else "500", "check": f"c{index % 3}"}
        registry.add("http_req_duration", value, tags)
        registry.add("http_reqs", 1, tags)
        registry.add("payload", index % 7)
        registry.add("checks", index % 5 != 0, tags)
        registry.add("vus_max", index % 50)
        registry.add("vus", index % 9)


def summary_of(registry):
    names = [
        "http_req_duration",
        "http_req_duration{status:500}",
        "http_reqs",
        "payload",
        "checks",
        "vus_max",
        "vus",
    ]
    exact = {name: registry.stats(name, ALL_STATS, duration=10.0) for name in names}
    for stats in exact.values():
        stats.pop("avg", None)  # float sums depend on the order of additions
    return exact, registry.stats("http_req_duration", ["avg"])["avg"], registry.checks


@pytest.mark.parametrize("sizes", [(20_000, 7_000, 1_000), (1_500, 1_000, 900)])
def test_snapshot_merge_is_exact(sizes):
    values = lognormal(sum(sizes), seed=11)
    whole = Registry()
    whole.submetric("http_req_duration{status:500}")
    fill(whole, values)
    merged = Registry()
    merged.submetric("http_req_duration{status:500}")
    start = 0
    for size in sizes:
        part = Registry()
        part.submetric("http_req_duration{status:500}")
        fill(part, values[start : start + size], offset=start)
        start += size
        snapshot = pickle.loads(pickle.dumps(json.loads(json.dumps(part.snapshot()))))
        merged.merge(snapshot)
    exact, avg, checks = summary_of(merged)
    assert (exact, checks) == summary_of(whole)[::2]
    assert avg == pytest.approx(summary_of(whole)[1], rel=1e-12)
    exact_mode = merged.metric("http_req_duration").raw is not None
    assert exact_mode == (sum(sizes) <= SMALL_LIMIT)
    assert exact["vus_max"]["value"] == 49  # vus_max merges as the maximum


def test_reset_snapshots_are_deltas():
    values = lognormal(9_000, seed=5)
    whole, worker, parent = Registry(), Registry(), Registry()
    fill(whole, values)
    for second in range(3):
        chunk = values[second * 3000 : (second + 1) * 3000]
        fill(worker, chunk, offset=second * 3000)
        parent.merge(worker.snapshot(reset=True))
        parent.tick(second + 1.0)
    assert worker.metric("http_req_duration").empty
    assert summary_of(parent)[::2] == summary_of(whole)[::2]
    assert [p["count"] for p in parent.series["http_req_duration"]] == [3000] * 3


def test_a_seconds_p95_is_never_above_its_exact_max():
    # 12.3456 ms is 12346 rounded HDR units (1 us): the p(95) of that second must
    # still be 12.3456, not 12.346 (a second of a few slow requests hit it in CI)
    registry = Registry()
    registry.add("http_req_duration", 12.3456)
    registry.tick(1.0)
    (point,) = registry.series["http_req_duration"]
    assert point["p(95)"] == point["max"] == 12.3456
