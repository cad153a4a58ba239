"""The load engine inside Chaos Toolkit: run_load, stop_load, the probes and the control."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from chaoslib.exceptions import ActivityFailed, InterruptExecution

from chaospika.load import control
from chaospika.load.actions import run_load, stop_load
from chaospika.load.probes import (
    captured,
    load_failures,
    metric,
    thresholds_passed,
    time_series,
)


def order_spec(api: str, product: str, vus: int = 4, duration: str = "1s") -> dict:
    return {
        "scenarios": {
            "orders": {
                "executor": "constant-vus",
                "vus": vus,
                "duration": duration,
                "steps": [
                    {
                        "request": {
                            "method": "POST",
                            "url": f"{api}/orders",
                            "headers": {"Idempotency-Key": "{{uuid}}"},
                            "json": {"product_id": product, "user_id": "u{{vu}}"},
                            # sold out (409) is an answer, not a failure (k6's way)
                            "expectedStatuses": [200, 202, 409],
                        },
                        "checks": [{"status": [200, 202, 409]}],
                        "captures": [{"name": "order_id", "jsonpath": "$.order_id"}],
                    },
                    {"think": "20ms"},
                ],
            }
        },
        "thresholds": {
            "http_req_failed": ["rate==0"],
            "http_req_duration{scenario:orders}": ["p(95)<1000"],
        },
    }


@pytest.fixture
def api(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path)
    url = state["api_url"]
    requests.post(f"{url}/products/p1/init", json={"stock": 30}, timeout=5)
    return url


def test_run_load_captures_every_acknowledged_order(api):
    assert load_failures("orders")["ran"] is False
    summary = run_load(spec=order_spec(api, "p1"), name="orders")

    assert summary["thresholds_passed"] is True
    assert summary["metrics"]["http_reqs"]["count"] > 30
    ids = captured("orders", "order_id")
    assert len(ids) == len(set(ids)) == 30
    assert summary["captures"]["order_id"] == ids
    assert requests.get(f"{api}/products/p1/stock", timeout=5).json()["stock"] == 0
    assert thresholds_passed("orders") is True
    assert metric("orders", "http_req_duration{scenario:orders}", "p(95)") < 1000
    failures = load_failures("orders")
    assert failures["failed"] == 0 and failures["ratio"] == 1.0


def test_time_series_has_a_point_per_second_that_adds_up(api):
    summary = run_load(spec=order_spec(api, "p1", duration="2s"), name="series")

    requests_per_second = time_series("series", "http_reqs")
    assert len(requests_per_second) >= 2
    assert [p["t"] for p in requests_per_second] == sorted(
        p["t"] for p in requests_per_second
    )
    total = summary["metrics"]["http_reqs"]["count"]
    assert sum(p["count"] for p in requests_per_second) == total
    durations = time_series("series", "http_req_duration{scenario:orders}")
    assert sum(p["count"] for p in durations) == total
    assert all(0 < p["p(95)"] <= p["max"] for p in durations)
    assert all(p["rate"] == 0 for p in time_series("series", "http_req_failed"))
    with pytest.raises(ActivityFailed, match="argument 'metric'.*no metric"):
        time_series("series", "nope")
    with pytest.raises(ActivityFailed, match="argument 'metric'.*not tracked"):
        time_series("series", "http_reqs{status:500}")


def test_a_background_load_answers_probes_live_and_stops_on_request(api):
    spec = order_spec(api, "p1", vus=2, duration="30s")
    worker = threading.Thread(target=run_load, kwargs={"spec": spec, "name": "bg"})
    worker.start()
    time.sleep(1.5)
    live = load_failures("bg")
    assert live["running"] is True and live["requests"] > 0
    assert metric("bg", "http_reqs", "count") > 0
    started = time.monotonic()
    summary = stop_load("bg")
    worker.join(5)
    assert time.monotonic() - started < 5
    assert summary["stopped_by"] == "stop_event"
    assert stop_load("bg")["name"] == "bg"  # safe to call twice


def test_failed_thresholds_are_reported_not_hidden(make_sandbox, tmp_path):
    from chaospika._ports import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    summary = run_load(spec=order_spec(dead, "p1", vus=1), name="dead")
    assert summary["thresholds_passed"] is False
    assert summary["thresholds"]["http_req_failed"] == {"rate==0": False}
    assert thresholds_passed("dead") is False
    assert load_failures("dead")["ratio"] == 0.0


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({}, "spec"),
        ({"spec": {"scenarios": {}}, "spec_path": "x.json"}, "spec"),
        ({"spec": [1]}, "spec"),
        ({"spec_path": "/nonexistent/spec.json"}, "spec_path"),
        ({"spec": {"scenarios": {"s": {"executor": "warp-speed"}}}}, "executor"),
        (
            {
                "spec": {
                    "scenarios": {
                        "s": {
                            "executor": "constant-arrival-rate",
                            "rate": -1,
                            "duration": "1s",
                            "preAllocatedVUs": 1,
                            "steps": [],
                        }
                    }
                }
            },
            "rate",
        ),
        ({"spec": {"scenarios": {}}, "max_duration": -1}, "max_duration"),
        ({"spec": {"scenarios": {}}, "name": ""}, "name"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ActivityFailed, match=argument):
        run_load(**kwargs)


def test_probes_of_an_unknown_load_name_the_argument():
    with pytest.raises(ActivityFailed, match="name"):
        thresholds_passed("never-started")
    with pytest.raises(ActivityFailed, match="name"):
        stop_load("never-started")


def test_metric_rejects_an_untracked_submetric_and_a_bad_stat(api):
    run_load(spec=order_spec(api, "p1", vus=1), name="m")
    with pytest.raises(ActivityFailed, match="metric"):
        metric("m", "http_req_duration{status:500}", "p(95)")
    with pytest.raises(ActivityFailed, match="stat"):
        metric("m", "http_reqs", "p(95)")


def test_control_runs_the_load_around_the_whole_experiment(api, tmp_path):
    spec_file = tmp_path / "load.json"
    spec_file.write_text(json.dumps(order_spec(api, "p1", vus=1, duration="20s")))
    experiment = {
        "title": "baseline under load",
        "description": "the load control wraps the experiment",
        "controls": [
            {
                "name": "load",
                "provider": {
                    "type": "python",
                    "module": "chaospika.load.control",
                    "arguments": {"name": "ctl", "spec_path": str(spec_file)},
                },
            }
        ],
        "steady-state-hypothesis": {
            "title": "the load is already running and healthy",
            "probes": [
                {
                    "type": "probe",
                    "name": "requests-flow",
                    "tolerance": {"type": "jsonpath", "path": "$.failed", "expect": 0},
                    "pauses": {"before": 1.2},
                    "provider": {
                        "type": "python",
                        "module": "chaospika.load.probes",
                        "func": "load_failures",
                        "arguments": {"name": "ctl"},
                    },
                }
            ],
        },
        "method": [
            {
                "type": "action",
                "name": "wait",
                "provider": {"type": "process", "path": "sleep", "arguments": "1"},
            }
        ],
    }
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    journal = tmp_path / "journal.json"
    chaos = Path(sys.executable).with_name("chaos")
    subprocess.run(
        [str(chaos), "run", "--journal-path", str(journal), str(path)],
        cwd=tmp_path,
        timeout=120,
        capture_output=True,
        check=False,
    )
    result = json.loads(journal.read_text())
    assert result["status"] == "completed" and result["deviated"] is False
    before = result["steady_states"]["before"]["probes"][0]["output"]
    assert before["ran"] is True and before["running"] is True
    loads = result["pika_loads"]["ctl"]
    assert loads["stopped_by"] == "stop_event"
    assert loads["metrics"]["http_reqs"]["count"] > 0


def test_control_refuses_a_bad_spec():
    with pytest.raises(InterruptExecution, match="spec"):
        control.before_experiment_control({}, name="x")
    with pytest.raises(InterruptExecution, match="executor"):
        control.before_experiment_control(
            {}, name="x", spec={"scenarios": {"s": {"executor": "nope"}}}
        )


async def block_loop(vu) -> None:
    """An iteration that holds the event loop: no stop can land for a while."""
    time.sleep(1.5)  # noqa: ASYNC251 - blocking on purpose


def blocking_spec() -> dict:
    return {
        "scenarios": {
            "stuck": {
                "executor": "constant-vus",
                "vus": 1,
                "duration": "30s",
                "exec": "test_load_activities:block_loop",
            }
        }
    }


def test_stop_load_fails_when_the_load_did_not_stop_in_time():
    worker = threading.Thread(
        target=run_load, kwargs={"spec": blocking_spec(), "name": "stuck"}
    )
    worker.start()
    time.sleep(0.3)  # inside the first iteration
    with pytest.raises(ActivityFailed, match="did not stop within 0.2 s"):
        stop_load("stuck", timeout=0.2)
    summary = stop_load("stuck", timeout=20)  # it ends after the iteration
    worker.join(5)
    assert summary["stopped_by"] == "stop_event"


def test_stop_all_loads_ends_background_loads():
    from chaospika.load.actions import stop_all_loads

    spec = blocking_spec()
    spec["scenarios"]["stuck"]["exec"] = "test_load_activities:short_sleep"
    worker = threading.Thread(target=run_load, kwargs={"spec": spec, "name": "all"})
    worker.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert stop_all_loads(timeout=10) >= 1
    worker.join(5)
    assert not worker.is_alive() and time.monotonic() - started < 5
    assert stop_load("all")["stopped_by"] == "stop_event"
    with pytest.raises(ActivityFailed, match="did not stop"):
        worker = threading.Thread(
            target=run_load, kwargs={"spec": blocking_spec(), "name": "all2"}
        )
        worker.start()
        time.sleep(0.3)
        stop_all_loads(timeout=0.2)
    stop_load("all2", timeout=20)
    worker.join(5)


async def short_sleep(vu) -> None:
    import asyncio

    await asyncio.sleep(0.05)


def test_stop_load_fails_when_the_load_ended_without_a_result():
    from chaospika.load.session import LoadSession

    spec = {"vus": 1, "iterations": 1, "steps": [{"think": 0}]}
    session = LoadSession("broken", spec, None)
    session.run_handle.error = RuntimeError("engine crashed")  # as run() keeps it
    session.done.set()
    with pytest.raises(ActivityFailed, match="without a result: RuntimeError"):
        stop_load("broken", timeout=1)
    never_ran = LoadSession("never-ran", spec, None)
    never_ran.done.set()
    with pytest.raises(ActivityFailed, match="without a result: no result"):
        stop_load("never-ran", timeout=1)
    assert never_ran.summary() == {"name": "never-ran", "running": False}
