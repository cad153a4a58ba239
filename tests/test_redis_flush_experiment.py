"""`chaos run experiments/redis-flush.json` against real sandboxes: correct, and with `stock-reseed`."""

from pathlib import Path

import pytest
from chaos_runs import run_chaos, sandbox_env, verdict

from chaospika.ledger import store

EXPERIMENT = Path(__file__).resolve().parent.parent / "experiments" / "redis-flush.json"
CONSISTENCY = "no-order-lost-stuck-duplicated-or-oversold"

pytestmark = pytest.mark.slow


def run_experiment(state: dict, tmp_path: Path) -> dict:
    return run_chaos(sandbox_env(state), tmp_path, EXPERIMENT, timeout=180)


def probe_output(journal: dict, phase: str, name: str):
    for probe in journal["steady_states"][phase]["probes"]:
        if probe["activity"]["name"] == name:
            return probe["output"]
    raise AssertionError(f"no probe {name} in the {phase} hypothesis")


def method_run(journal: dict, name: str) -> dict:
    for run in journal["run"]:
        if run["activity"]["name"] == name:
            return run
    raise AssertionError(f"no activity {name} in the method")


def test_a_correct_sale_refuses_orders_while_flushed_and_loses_nothing(
    make_sandbox, tmp_path
):
    state = make_sandbox(tmp_path)
    journal = run_experiment(state, tmp_path)

    assert journal["status"] == "completed", journal["status"]
    assert journal["deviated"] is False, probe_output(journal, "after", CONSISTENCY)
    flush = method_run(journal, "flush-the-sale-s-redis-keys")["output"]
    assert flush["flushed_count"] > 3  # stock, stream, idempotency keys
    assert flush["snapshot"].startswith(store.ledger_dir())
    refused = method_run(journal, "an-order-while-the-stock-key-is-gone-is-refused")
    assert refused["status"] == "succeeded"  # refused: 404, the stock is unknown
    assert refused["output"]["status"] in (404, 503)
    # only keys written between the scan and the delete (idempotency keys of
    # orders whose stock and stream entry are in the snapshot) are left
    assert method_run(journal, "keys-left-while-flushed")["output"] < 100
    restored = method_run(journal, "restore-the-flushed-keys")["output"]
    assert restored["restored_count"] == flush["flushed_count"]
    assert restored["replaced_count"] == 0  # nothing re-created the keys meanwhile
    assert method_run(journal, "worker-survived-the-flush")["output"] is True
    after = probe_output(journal, "after", CONSISTENCY)
    assert after["consistent"] is True, after["violations"]
    assert after["distinct_orders"] == after["acknowledged_count"] > 0
    assert after["redis_stock"] == after["sql_stock"] == 0
    assert [f["state"] for f in journal["pika_faults"]] == ["undone"]
    assert verdict(tmp_path / "journal.json") == 0


def test_stock_reseed_sells_units_twice(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path, bugs=("stock-reseed",))
    journal = run_experiment(state, tmp_path)

    assert journal["deviated"] is True
    after = probe_output(journal, "after", CONSISTENCY)
    assert after["consistent"] is False
    # clients were told "accepted" for more units than the sale had: the excess
    # is in SQL (oversold) or, replaced by the restore, nowhere (lost)
    assert after["acknowledged_count"] > after["initial_stock"] == 400
    assert after["oversold_count"] + after["lost_count"] > 0, after["violations"]
    assert verdict(tmp_path / "journal.json") == 1
