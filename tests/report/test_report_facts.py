"""What the report reads from real worker-crash journals, and from edge cases."""

import copy
import json
from pathlib import Path

import pytest

from chaospika.report.facts import facts, loads, parse_time

DATA = Path(__file__).parent / "data"


def journal(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture(scope="module")
def passed() -> dict:
    return journal("worker-crash-passed.json")


@pytest.fixture(scope="module")
def lost() -> dict:
    return journal("worker-crash-lost.json")


def run_entry(journal: dict, name: str) -> dict:
    return next(r for r in journal["run"] if r["activity"]["name"] == name)


def test_a_passed_worker_crash_run(passed):
    found = facts(passed)

    assert (found["verdict"].outcome, found["verdict"].code) == ("passed", 0)
    names = [(row["phase"], row["name"]) for row in found["activities"]]
    assert len(names) == 4 + len(passed["run"]) + 4 + 1
    assert names[0][0] == "before" and names[-1] == (
        "rollback",
        "make-sure-the-worker-runs",
    )
    assert [row["name"] for row in found["steady_state"]] == [
        "no-order-lost-stuck-duplicated-or-oversold",
        "api-is-healthy",
        "inventory-worker-is-running",
        "no-order-request-failed",
    ]
    assert all(
        row["before"]["met"] and row["after"]["met"] for row in found["steady_state"]
    )

    (fault,) = found["faults"]
    record = passed["pika_faults"][0]
    assert fault["kind"] == "process.kill" and fault["target"].endswith("worker.pid")
    assert (fault["start"], fault["end"]) == (record["applied_at"], record["undone_at"])
    assert fault["undone_by"] == "start_process"

    recovery = run_entry(passed, "recovery-time")["output"]["drain_seconds"]
    assert found["recovery"] == {
        "seconds": recovery,
        "source": "recovery-time: drain_seconds",
    }
    assert found["max_downtime"] == {"seconds": 0.0, "source": "load orders"}
    assert found["ids"]["consistent"] is True
    assert [found["ids"][f"{k}_count"] for k in ("lost", "stuck", "duplicates")] == [
        0,
        0,
        0,
    ]
    assert (
        found["requests_count"]
        == run_entry(passed, "customers-place-orders")["output"]["metrics"][
            "http_reqs"
        ]["count"]
    )


def test_the_load_series_sit_on_the_time_of_the_activity_that_ran_the_load(passed):
    (load,) = loads(passed)
    started = parse_time(run_entry(passed, "customers-place-orders")["start"])
    raw = passed["pika_series"]["orders"]["metrics"]

    assert load["name"] == "orders" and load["started_at"] == started
    first = raw["http_reqs"][0]
    x, rps = load["series"]["rps"][0]
    assert x == pytest.approx(started + first["t"] / 2)
    assert rps == first["rate"]
    p95 = [y for _, y in load["series"]["p95_ms"] if y is not None]
    assert p95 == [p["p(95)"] for p in raw["http_req_duration"]]
    assert all(y == 0.0 for _, y in load["series"]["error_pct"] if y is not None)
    assert load["series"]["ws_p95_ms"] == []  # this experiment has no WebSocket


def test_a_worker_crash_run_that_lost_orders_names_them(lost):
    found = facts(lost)
    after = next(
        p["output"]
        for p in lost["steady_states"]["after"]["probes"]
        if "consistent" in (p["output"] or {})
    )
    captured = set(
        run_entry(lost, "customers-place-orders")["output"]["captures"]["order_id"]
    )

    assert found["verdict"].outcome == "deviated"
    assert found["ids"]["lost"] == after["lost"] and found["ids"]["lost_count"] > 0
    assert set(found["ids"]["lost"]) <= captured
    assert found["ids"]["phase"] == "after"
    assert any(not c.ok and c.kind == "after" for c in found["verdict"].checks)


def failing_series(passed: dict, all_failed: set[int], some_failed: set[int]) -> dict:
    """The passed journal with requests failing in the given seconds (1-based ticks)."""
    changed = copy.deepcopy(passed)
    points = changed["pika_series"]["orders"]["metrics"]["http_req_failed"]
    for index, point in enumerate(points, start=1):
        total = point["total"]
        point["passes"] = (
            total if index in all_failed else (1 if index in some_failed else 0)
        )
        point["rate"] = point["passes"] / total
    return changed


def test_downtime_runs_from_a_second_where_all_failed_to_the_next_success(passed):
    changed = failing_series(passed, all_failed={2, 3}, some_failed={4})
    (load,) = loads(changed)
    ticks = [
        p["t"] for p in changed["pika_series"]["orders"]["metrics"]["http_req_failed"]
    ]

    assert load["downtime_seconds"] == pytest.approx(ticks[2] - ticks[0], abs=1e-3)
    found = facts(changed)
    assert found["max_downtime"]["seconds"] == load["downtime_seconds"]
    assert found["max_downtime"]["source"] == "load orders"
    # requests failed until the end of tick 4: that long after the kill
    (row,) = found["per_fault"]
    expected = load["started_at"] + ticks[3] - found["faults"][0]["start"]
    assert row["errors_for_seconds"] == pytest.approx(expected, abs=1e-3)


def test_without_a_recovery_probe_the_series_tell_how_long_requests_failed(passed):
    changed = failing_series(passed, all_failed=set(), some_failed={3})
    for run in changed["run"]:
        if isinstance(run.get("output"), dict):
            run["output"].pop("drain_seconds", None)
    found = facts(changed)
    (row,) = found["per_fault"]

    assert found["recovery"]["source"] == "load series: last failed request"
    assert found["recovery"]["seconds"] == row["errors_for_seconds"] > 0
    assert found["max_downtime"]["seconds"] == 0.0  # never did every request fail


def test_times_without_a_zone_are_utc_and_bad_ones_are_none():
    assert parse_time("2025-01-02T03:04:05") == parse_time("2025-01-02T03:04:05+00:00")
    assert parse_time("2025-01-02T03:04:05+01:00") == parse_time("2025-01-02T02:04:05")
    assert parse_time("yesterday") is None and parse_time(None) is None
