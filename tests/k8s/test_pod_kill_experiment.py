"""`chaos run experiments/pod-kill.json` against the in-test API server.

The real kubernetes client, chaostoolkit-kubernetes probes and the
chaostoolkit-addons safeguard talk to the in-test API server (see
in_test_apiserver.py); its controllers recreate the killed pod after a delay and
the service behind the pods answers 503 while none is ready, so recovery and
downtime are really measured.
"""

import json
import os
import subprocess
from pathlib import Path

from chaos_runs import CHAOS, verdict

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "pod-kill.json"
SELECTOR = "app=orders"


def experiment_env(k8s, service_url: str, **overrides: str) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if "proxy" not in key.lower()
    }
    env.update(
        KUBECONFIG=str(k8s.kubeconfig),
        PIKA_K8S_NAMESPACE=k8s.namespace,
        PIKA_K8S_SELECTOR=SELECTOR,
        PIKA_SERVICE_URL=service_url,
        PIKA_DOWNTIME_WINDOW="2s",
        PIKA_HEALTH_WINDOW="0.3s",
    )
    env.update(overrides)
    return env


def run_chaos(env: dict[str, str], folder: Path, timeout: float = 60) -> dict:
    """`chaos run` of the experiment to its end (no version check: loopback only)."""
    argv = [
        str(CHAOS),
        "--no-version-check",
        "--log-file",
        str(folder / "chaos.log"),
        "run",
    ]
    argv += ["--journal-path", str(folder / "journal.json"), str(EXPERIMENT)]
    subprocess.run(
        argv, env=env, cwd=folder, timeout=timeout, capture_output=True, check=False
    )
    return json.loads((folder / "journal.json").read_text())


def outcome(journal: dict, phase: str) -> dict:
    for probe in journal["steady_states"][phase]["probes"]:
        if probe["activity"]["name"] == "pod-kill-within-thresholds":
            return probe["output"]
    raise AssertionError("no outcome probe")


def method_output(journal: dict, name: str):
    for run in journal["run"]:
        if run["activity"]["name"] == name:
            return run["output"]
    raise AssertionError(f"no activity {name} in the method")


def test_a_pod_kill_that_recovers_in_time_passes(k8s, tmp_path):
    k8s.cluster.create_delay, k8s.cluster.ready_delay = 0.4, 0.3
    k8s.cluster.add_deployment(k8s.namespace, "orders", 1, {"app": "orders"})
    k8s.cluster.add_deployment(k8s.namespace, "billing", 2, {"app": "billing"})
    service = k8s.service(SELECTOR)
    before = k8s.names("app=orders")
    bystanders = k8s.names("app=billing")

    # One replica: the service is down until the replacement is ready.
    env = experiment_env(
        k8s, service.url, PIKA_K8S_MIN_RUNNING="0", PIKA_DOWNTIME_WINDOW="3s"
    )
    journal = run_chaos(env, tmp_path)

    assert journal["status"] == "completed", journal.get("pika_safety")
    assert journal["deviated"] is False
    killed = method_output(journal, "kill-one-pod")
    assert [p["name"] for p in killed["killed"]] == before
    assert killed["grace_period_seconds"] == 0
    assert [d["name"] for d in k8s.cluster.deletes] == before
    assert k8s.names("app=billing") == bystanders
    recovery = method_output(journal, "time-to-recover")
    assert recovery["recovered"] is True and recovery["verdict"] == "PASS"
    assert 0.7 <= recovery["recovery_seconds"] < 5
    downtime = method_output(journal, "service-downtime")
    assert 0.5 <= downtime["downtime_seconds"] < 5 and downtime["ended_down"] is False
    after = outcome(journal, "after")
    assert after["verdict"] == "PASS" and after["ok"] is True
    assert after["downtime_seconds"] == downtime["downtime_seconds"]
    assert outcome(journal, "before")["killed"] is False
    (fault,) = journal["pika_faults"]
    assert fault["kind"] == "k8s.kill_pods" and fault["state"] == "undone"
    assert fault["target"]["pods"] == before
    assert verdict(tmp_path / "journal.json") == 0
    log = (tmp_path / "chaos.log").read_text()
    # The safeguard's probe ran.
    assert "Activity 'the-service-keeps-running-pods' loaded" in log
    # The token reached the API server through chaostoolkit-kubernetes' setup.
    assert f"Bearer {k8s.token}" in k8s.server.seen_authorization


def test_a_slow_recovery_and_a_long_outage_deviate(k8s, tmp_path):
    k8s.cluster.create_delay, k8s.cluster.ready_delay = 0.6, 0.3
    k8s.cluster.add_deployment(k8s.namespace, "orders", 1, {"app": "orders"})
    service = k8s.service(SELECTOR)
    env = experiment_env(
        k8s,
        service.url,
        PIKA_K8S_MIN_RUNNING="0",
        PIKA_PASS_WITHIN="300ms",
        PIKA_WARN_WITHIN="600ms",
        PIKA_MAX_DOWNTIME="500ms",
    )

    journal = run_chaos(env, tmp_path)

    assert journal["status"] == "completed"
    assert journal["deviated"] is True
    after = outcome(journal, "after")
    assert after["verdict"] == "FAIL" and after["ok"] is False
    assert any("did not have its 1 ready pods" in r for r in after["reasons"])
    assert any("the service was down for" in r for r in after["reasons"])
    assert method_output(journal, "time-to-recover")["verdict"] == "FAIL"
    # The owner came back later: the safety control's undo saw it.
    (fault,) = journal["pika_faults"]
    assert fault["state"] == "undone" and fault["undone_by"] == "safety"
    assert verdict(tmp_path / "journal.json") == 1


def test_an_over_wide_selector_is_refused_before_anything_is_touched(k8s, tmp_path):
    k8s.cluster.add_deployment(k8s.namespace, "orders", 2, {"app": "orders"})
    k8s.cluster.add_deployment(k8s.namespace, "billing", 2, {"app": "billing"})
    service = k8s.service(SELECTOR)
    before = k8s.names()

    # Both workloads are healthy, so the steady state holds; the kill would pick
    # among the pods of two workloads: the safety control's pre-flight refuses it.
    wide = "app in (orders,billing)"
    journal = run_chaos(
        experiment_env(k8s, service.url, PIKA_K8S_SELECTOR=wide), tmp_path
    )

    assert journal["status"] == "interrupted"
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    assert journal["run"] == []
    refused = journal["pika_safety"]["refused"]
    assert "kill-one-pod" in refused and "the selection is too wide" in refused
    assert k8s.cluster.deletes == [] and k8s.names() == before
    assert journal["pika_faults"] == []
    assert verdict(tmp_path / "journal.json") == 6
