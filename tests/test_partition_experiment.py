"""`chaos run experiments/api-redis-partition.json`: a partition between the API and Redis."""

from pathlib import Path

import pytest
from chaos_runs import run_chaos, verdict
from test_redis_latency_experiment import proxied_sandbox, proxy_env

EXPERIMENT = (
    Path(__file__).resolve().parent.parent / "experiments" / "api-redis-partition.json"
)
CONSISTENCY = "no-acknowledged-order-lost-duplicated-or-oversold"

pytestmark = pytest.mark.slow


def test_the_api_fails_fast_through_a_partition_and_recovers(make_sandbox, tmp_path):
    state = proxied_sandbox(make_sandbox, tmp_path)
    journal = run_chaos(proxy_env(state), tmp_path, EXPERIMENT, timeout=180)

    assert journal["status"] == "completed", journal["status"]
    assert journal["deviated"] is False, journal["steady_states"]["after"]
    run = {r["activity"]["name"]: r["output"] for r in journal["run"]}
    cut = run["partition-the-api-from-redis"]
    assert cut["disabled"] is True and cut["enabled_again"] is True
    assert cut["duration_seconds"] == 3.0
    health = run["health-through-the-partition"]
    assert health["statuses"].get("503", 0) >= 10  # degraded, answered at once
    assert 2.5 <= health["longest_outage_seconds"] < 10
    assert health["statuses"].get("200", 0) >= 3  # healthy again by itself
    load = run["customers-place-orders"]
    assert load["thresholds_passed"] is True, load["thresholds"]
    assert load["metrics"]["http_req_duration"]["max"] < 1500
    assert 0.4 <= load["metrics"]["checks"]["value"] < 1  # some orders refused
    after = {
        p["activity"]["name"]: p["output"]
        for p in journal["steady_states"]["after"]["probes"]
    }
    consistency = after[CONSISTENCY]
    assert consistency["consistent"] is True, consistency["violations"]
    assert consistency["lost"] == [] and consistency["duplicates"] == {}
    print(f"orders stored whose reply the partition cut: {consistency['unexpected']}")
    (fault,) = journal["pika_faults"]
    assert fault["kind"] == "network.partition" and fault["state"] == "undone"
    assert fault["undone_by"] == "duration"
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    assert verdict(tmp_path / "journal.json") == 0
