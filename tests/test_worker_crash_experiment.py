"""`chaos run experiments/worker-crash.json` against real sandboxes, clean and with each seeded bug."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

EXPERIMENT = (
    Path(__file__).resolve().parent.parent / "experiments" / "worker-crash.json"
)
CHAOS = Path(sys.executable).with_name("chaos")

pytestmark = pytest.mark.slow


def run_experiment(state: dict, tmp_path: Path, **overrides: str) -> dict:
    """Run the experiment against `state`'s sandbox and return its journal."""
    journal = tmp_path / "journal.json"
    env = dict(
        os.environ,
        PIKA_API_URL=state["api_url"],
        PIKA_REDIS_URL=state["redis_url"],
        PIKA_DB_URL=state["db_url"],
        PIKA_WORKER_PIDFILE=state["pidfiles"]["worker"],
        PIKA_PRODUCT_ID=f"sale-{uuid.uuid4().hex[:8]}",
        **overrides,
    )
    subprocess.run(
        [
            str(CHAOS),
            "--log-file",
            str(tmp_path / "chaos.log"),
            "run",
            "--journal-path",
            str(journal),
            str(EXPERIMENT),
        ],
        env=env,
        cwd=tmp_path,
        timeout=240,
        capture_output=True,
        check=False,
    )
    return json.loads(journal.read_text())


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
    assert method_output(journal, "kill-inventory-worker")["killed"] is True
    assert method_output(journal, "worker-is-down") is False
    assert method_output(journal, "backlog-while-worker-is-down")["backlog"] > 0
    recovery = method_output(journal, "recovery-time")
    assert recovery["drained"] is True and recovery["seconds"] < 30
    after = probe_output(journal, "after", "no-order-lost-duplicated-or-oversold")
    assert after["consistent"] is True, after["violations"]
    assert after["lost"] == [] and after["duplicates"] == {} and after["oversold"] == []
    assert (
        after["acknowledged_count"]
        == after["distinct_orders"]
        == after["initial_stock"]
    )
    assert probe_output(journal, "after", "no-order-request-failed")["failed"] == 0
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]


# A rush: 40 customers with no think time sell the stock in well under a second,
# far faster than the worker's 12.5 orders/s. Reading up to 1,000 entries at a time,
# the worker takes nearly the whole backlog in its second or third batch, which lasts
# many seconds, so the SIGKILL two seconds in lands on a batch in flight: entries
# acknowledged but not written (ack-before-commit), or written but not acknowledged
# (non-idempotent-worker). With small batches the kill would fall in the gap between
# two batches about one time in twenty, and the bug would go unseen.
RUSH = {"PIKA_CUSTOMERS": "40", "PIKA_THINK_TIME": "5ms", "PIKA_LOAD_SECONDS": "4"}
WORKER_IN_BIG_BATCHES = {"work_ms": 80, "batch": 1000}


def test_ack_before_commit_loses_orders_and_names_them(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path, bugs=("ack-before-commit",), **WORKER_IN_BIG_BATCHES)
    journal = run_experiment(state, tmp_path, **RUSH)

    assert journal["deviated"] is True
    after = probe_output(journal, "after", "no-order-lost-duplicated-or-oversold")
    assert after["consistent"] is False
    assert after["lost"], after["violations"]
    assert set(after["lost"]) <= acknowledged_ids(journal)


def test_non_idempotent_worker_duplicates_orders_and_names_them(make_sandbox, tmp_path):
    state = make_sandbox(
        tmp_path, bugs=("non-idempotent-worker",), **WORKER_IN_BIG_BATCHES
    )
    journal = run_experiment(state, tmp_path, **RUSH)

    assert journal["deviated"] is True
    after = probe_output(journal, "after", "no-order-lost-duplicated-or-oversold")
    assert after["duplicates"], after["violations"]
    assert set(after["duplicates"]) <= acknowledged_ids(journal)
    assert all(count >= 2 for count in after["duplicates"].values())


def test_oversell_bug_sells_past_the_stock_and_names_the_orders(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path, bugs=("oversell",))
    # The rush keeps many orders in flight at once: every two that overlap read the
    # same stock and write back the same value, so a decrement is lost each time.
    journal = run_experiment(state, tmp_path, **RUSH)

    assert journal["deviated"] is True
    after = probe_output(journal, "after", "no-order-lost-duplicated-or-oversold")
    assert after["oversold"], after["violations"]
    assert set(after["oversold"]) <= acknowledged_ids(journal)
    assert after["distinct_orders"] > after["initial_stock"]
