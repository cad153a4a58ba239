"""`chaos run experiments/redis-latency.json` on a sandbox with the fault proxy (seed 004, Test 2)."""

from pathlib import Path

import pytest
from chaos_runs import run_chaos, sandbox_env, verdict

from chaospika._ports import free_port

EXPERIMENT = (
    Path(__file__).resolve().parent.parent / "experiments" / "redis-latency.json"
)
BOUNDS = "api-p99-bounded-and-no-order-failed"

pytestmark = pytest.mark.slow


def proxied_sandbox(make_sandbox, tmp_path: Path) -> dict:
    """A sandbox whose API reaches Redis through the fault proxy."""
    return make_sandbox(
        tmp_path, proxy=True, proxy_port=free_port(), proxy_redis_port=free_port()
    )


def proxy_env(state: dict) -> dict[str, str]:
    return sandbox_env(
        state, PIKA_PROXY_URL=state["proxy_url"], PIKA_PROXY_NAME=state["proxy_name"]
    )


def test_api_latency_follows_redis_latency_without_errors(make_sandbox, tmp_path):
    state = proxied_sandbox(make_sandbox, tmp_path)
    journal = run_chaos(proxy_env(state), tmp_path, EXPERIMENT, timeout=180)

    assert journal["status"] == "completed", journal["status"]
    after = {
        p["activity"]["name"]: p for p in journal["steady_states"]["after"]["probes"]
    }
    table = after[BOUNDS]["output"]
    print(table["markdown"])
    assert journal["deviated"] is False, table["violations"]
    assert [row["latency_ms"] for row in table["table"]] == [0, 50, 100]
    for row in table["table"]:
        assert row["errors_count"] == 0 and row["requests_count"] > 100
        assert row["p50_increase_ms"] >= 0.8 * row["latency_ms"]  # it did reach the API
    seed_table = journal["run"][-1]
    assert seed_table["activity"]["name"] == "the-seed-004-table"
    assert seed_table["output"]["markdown"].startswith("| Latency Added | API p50 |")
    toxics = [f for f in journal["pika_faults"] if f["kind"] == "network.toxic"]
    assert len(toxics) == 2
    assert all(
        f["state"] == "undone" and f["undone_by"] == "remove_toxic" for f in toxics
    )
    assert journal["pika_safety"]["outstanding"] == []
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    assert verdict(tmp_path / "journal.json") == 0
