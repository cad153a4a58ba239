"""`chaos run experiments/redis-outage.json` against real sandboxes: correct, and with `no-redis-timeout`."""

from pathlib import Path

import pytest
from chaos_runs import run_chaos, sandbox_env, verdict

EXPERIMENT = (
    Path(__file__).resolve().parent.parent / "experiments" / "redis-outage.json"
)
FAIL_FAST = "no-order-request-hung-or-errored"
CONSISTENCY = "no-acknowledged-order-lost-and-none-unexpected"

pytestmark = pytest.mark.slow


def probe_output(journal: dict, phase: str, name: str):
    for probe in journal["steady_states"][phase]["probes"]:
        if probe["activity"]["name"] == name:
            return probe["output"]
    raise AssertionError(f"no probe {name} in the {phase} hypothesis")


def method_output(journal: dict, name: str):
    for run in journal["run"]:
        if run["activity"]["name"] == name:
            return run["output"]
    raise AssertionError(f"no activity {name} in the method")


def run_experiment(state: dict, tmp_path: Path) -> dict:
    return run_chaos(sandbox_env(state), tmp_path, EXPERIMENT, timeout=180)


def test_a_correct_api_fails_fast_loses_nothing_and_recovers(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path)
    journal = run_experiment(state, tmp_path)

    assert journal["status"] == "completed", journal["status"]
    assert journal["deviated"] is False, journal["steady_states"]["after"]
    pause = method_output(journal, "redis-stops-answering")
    assert pause["mode"] == "all" and pause["duration_seconds"] == 3.0
    health = method_output(journal, "health-through-the-outage")
    assert health["statuses"].get("503", 0) >= 3  # degraded: 503 while paused
    assert 2.0 <= health["longest_outage_seconds"] < 10
    assert health["statuses"].get("200", 0) >= 3  # healthy again by itself
    load = method_output(journal, "customers-place-orders")
    assert load["thresholds_passed"] is True, load["thresholds"]
    metrics = load["metrics"]
    assert metrics["http_req_duration"]["max"] < 1500
    assert 0.4 <= metrics["checks"]["value"] < 1  # the outage refused some orders
    assert probe_output(journal, "after", FAIL_FAST)["failed"] == 0
    after = probe_output(journal, "after", CONSISTENCY)
    assert after["consistent"] is True, after["violations"]
    assert after["lost"] == [] and after["unexpected"] == []
    assert after["acknowledged_count"] == after["distinct_orders"] > 0
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    assert verdict(tmp_path / "journal.json") == 0


def test_the_no_redis_timeout_bug_hangs_and_deviates(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path, bugs=("no-redis-timeout",))
    journal = run_experiment(state, tmp_path)

    assert journal["status"] == "completed", journal["status"]
    assert journal["deviated"] is True
    hung = probe_output(journal, "after", FAIL_FAST)
    assert hung["failed"] > 0  # cut by the load's fail-fast timeout
    load = method_output(journal, "customers-place-orders")
    assert load["thresholds"]["http_req_failed"] == {"rate==0": False}
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    assert verdict(tmp_path / "journal.json") == 1
