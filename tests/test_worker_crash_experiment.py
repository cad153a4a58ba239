"""`chaos run experiments/worker-crash.json` against real sandboxes, clean and with each seeded bug."""

from pathlib import Path

import pytest
from chaos_runs import run_chaos, sandbox_env, verdict

CONSISTENCY = "no-order-lost-stuck-duplicated-or-oversold"

pytestmark = pytest.mark.slow


def run_experiment(state: dict, tmp_path: Path, **overrides: str) -> dict:
    """Run the experiment against `state`'s sandbox and return its journal."""
    return run_chaos(sandbox_env(state, **overrides), tmp_path, timeout=240)


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


def acknowledged_ids(journal: dict) -> set:
    return set(method_output(journal, "customers-place-orders")["captures"]["order_id"])


def test_worker_crash_loses_nothing_on_a_correct_system(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path)
    journal = run_experiment(state, tmp_path)

    assert journal["status"] == "completed", journal["status"]
    assert journal["deviated"] is False
    busy = method_output(journal, "wait-until-the-worker-is-mid-batch")
    assert busy["busy_ms"] >= 50 and busy["pending"] > 0
    assert method_output(journal, "kill-inventory-worker")["killed"] is True
    assert method_output(journal, "worker-is-down") is False
    assert method_output(journal, "backlog-while-worker-is-down")["backlog"] > 0
    recovery = method_output(journal, "recovery-time")
    assert recovery["drained"] is True and recovery["drain_seconds"] < 30
    after = probe_output(journal, "after", CONSISTENCY)
    assert after["consistent"] is True, after["violations"]
    assert after["lost"] == [] and after["duplicates"] == {} and after["oversold"] == []
    assert after["stuck"] == []
    assert after["acknowledged_count"] == after["distinct_orders"] > 0
    assert probe_output(journal, "after", "no-order-request-failed")["failed"] == 0
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    assert verdict(tmp_path / "journal.json") == 0


# Each seeded bug at the settings the experiment ships with: no special recipe.
NAMED_BY_BUG = {
    "ack-before-commit": "lost",
    "non-idempotent-worker": "duplicates",
    "oversell": "oversold",
    "no-claim": "stuck",
}


@pytest.mark.parametrize("bug", list(NAMED_BY_BUG))
def test_each_seeded_bug_deviates_and_names_the_orders(bug, make_sandbox, tmp_path):
    state = make_sandbox(tmp_path, bugs=(bug,))
    journal = run_experiment(state, tmp_path)

    assert journal["deviated"] is True, probe_output(journal, "after", CONSISTENCY)
    after = probe_output(journal, "after", CONSISTENCY)
    named = after[NAMED_BY_BUG[bug]]
    assert named, after["violations"]
    assert set(named) <= acknowledged_ids(journal)
    if bug == "non-idempotent-worker":
        assert all(count >= 2 for count in named.values())
    if bug == "oversell":
        assert after["distinct_orders"] > after["initial_stock"]
    if bug == "no-claim":
        assert after["drained"] is False and after["lost"] == []
    assert verdict(tmp_path / "journal.json") == 1


def test_an_unreachable_api_is_a_baseline_failure_not_a_pass(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path)
    journal = run_experiment(state, tmp_path, PIKA_API_URL="http://127.0.0.1:1")

    assert journal["steady_states"]["before"]["steady_state_met"] is False
    assert journal["run"] == []
    assert verdict(tmp_path / "journal.json") == 2
