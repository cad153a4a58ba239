"""Recovery time, downtime and the PASS / WARN / FAIL verdict, really measured:
the in-test controllers recreate a killed pod after a delay and the service
answers 503 while no pod is ready."""

import threading
import time

import pytest
from chaoslib.exceptions import ActivityFailed

from chaospika import ledger
from chaospika.k8s import actions, probes


@pytest.fixture
def web(k8s):
    """One replica of web behind a service: killing it is an outage.

    The replacement comes 0.5 s after the kill and is ready 0.3 s later."""
    k8s.cluster.create_delay, k8s.cluster.ready_delay = 0.5, 0.3
    k8s.cluster.add_deployment(k8s.namespace, "web", 1, {"app": "web"})
    k8s.url = k8s.service("app=web").url
    return k8s


def test_recovery_is_timed_from_the_kill_and_passes(web):
    assert probes.pods_ready("app=web", web.namespace)["ready"] is True
    killed = actions.kill_pods("app=web", web.namespace)
    assert probes.pods_ready("app=web", web.namespace)["ready"] is False
    time.sleep(0.3)  # the probe starts late: the time still counts from the kill

    result = probes.wait_for_recovery("app=web", web.namespace)

    assert result["recovered"] is True and result["verdict"] == "PASS"
    assert result["since"] == "kill" and result["killed"] == [
        killed["killed"][0]["name"]
    ]
    assert 0.8 <= result["recovery_seconds"] < 3.0
    assert result["ready_count"] == result["desired_count"] == 1
    fault = ledger.get(killed["fault"])
    assert fault.state == "undone" and fault.data["undone_by"] == "owner recovered"
    assert probes.pods_ready("app=web", web.namespace)["ready"] is True


def test_a_recovery_past_pass_within_warns(web):
    actions.kill_pods("app=web", web.namespace)
    result = probes.wait_for_recovery(
        "app=web", web.namespace, pass_within="0.5s", warn_within="10s"
    )
    assert result["recovered"] is True and result["verdict"] == "WARN"
    assert 0.8 <= result["recovery_seconds"] < 3.0


def test_no_recovery_within_warn_within_fails_and_the_kill_stays_in_force(web):
    web.cluster.recreate = False
    killed = actions.kill_pods("app=web", web.namespace)
    started = time.monotonic()

    result = probes.wait_for_recovery(
        "app=web", web.namespace, pass_within=0.5, warn_within=1
    )

    assert time.monotonic() - started < 2.5  # it stops at warn_within after the kill
    assert result["recovered"] is False and result["verdict"] == "FAIL"
    assert result["recovery_seconds"] is None and result["ready_count"] == 0
    assert [f.id for f in ledger.outstanding()] == [killed["fault"]]
    outcome = probes.pod_kill_outcome(
        "app=web", web.namespace, 0.5, 1, max_downtime=None
    )
    assert outcome["verdict"] == "FAIL" and outcome["ok"] is False


def test_a_statefulset_pod_counts_once_the_old_one_is_gone(k8s):
    k8s.cluster.create_delay, k8s.cluster.ready_delay = 0.2, 0.2
    k8s.cluster.add_statefulset(k8s.namespace, "db", 2, {"app": "db"})
    actions.kill_pods("app=db", k8s.namespace, seed=1, grace_period=1)
    result = probes.wait_for_recovery("app=db", k8s.namespace)
    # 1 s of grace before the name is free, then 0.2 s to create and 0.2 s to be ready.
    assert 1.4 <= result["recovery_seconds"] < 3.5 and result["verdict"] == "PASS"


def run_downtime(url: str, duration: str, name: str = "downtime") -> dict:
    done: dict = {}
    thread = threading.Thread(
        target=lambda: done.update(
            probes.downtime(url, duration=duration, interval=0.05, name=name)
        )
    )
    thread.start()
    return {"thread": thread, "result": done}


def test_the_downtime_of_a_kill_is_measured_and_judged(web):
    before = probes.pod_kill_outcome("app=web", web.namespace)
    assert (
        before["killed"] is False and before["ok"] is True and before["verdict"] is None
    )

    sampling = run_downtime(web.url, "2.5s")
    time.sleep(0.3)
    actions.kill_pods("app=web", web.namespace)
    recovery = probes.wait_for_recovery("app=web", web.namespace)
    sampling["thread"].join(timeout=10)
    down = sampling["result"]

    assert 0.6 <= down["downtime_seconds"] <= recovery["recovery_seconds"] + 0.3
    assert down["ended_down"] is False and down["statuses"]["503"] >= 5
    passed = probes.pod_kill_outcome("app=web", web.namespace)
    assert passed["verdict"] == "PASS" and passed["ok"] is True
    assert passed["downtime_seconds"] == down["downtime_seconds"]
    assert passed["recovery_seconds"] == recovery["recovery_seconds"]

    strict = probes.pod_kill_outcome("app=web", web.namespace, max_downtime="300ms")
    assert (
        strict["verdict"] == "FAIL"
        and "the service was down for" in strict["reasons"][-1]
    )
    warned = probes.pod_kill_outcome(
        "app=web", web.namespace, pass_within="0.2s", warn_within=30
    )
    assert warned["verdict"] == "WARN" and warned["ok"] is True
    unmeasured = probes.pod_kill_outcome(
        "app=web", web.namespace, downtime_name="other"
    )
    assert (
        unmeasured["verdict"] == "FAIL"
        and "no downtime probe named 'other'" in unmeasured["reasons"][-1]
    )


def test_a_window_that_ends_in_an_outage_is_not_a_pass(web):
    web.cluster.recreate = False
    sampling = run_downtime(web.url, "0.8s")
    time.sleep(0.2)
    actions.kill_pods("app=web", web.namespace)
    sampling["thread"].join(timeout=10)
    assert sampling["result"]["ended_down"] is True
    outcome = probes.pod_kill_outcome(
        "app=web", web.namespace, warn_within=1, pass_within=1, max_downtime=10
    )
    assert outcome["verdict"] == "FAIL"
    assert any(
        "still down when the 'downtime' window ended" in r for r in outcome["reasons"]
    )


@pytest.mark.parametrize(
    ("arguments", "why"),
    [
        ({"pass_within": "soon"}, "argument 'pass_within' must be a duration"),
        (
            {"pass_within": 30, "warn_within": 10},
            "must not be shorter than 'pass_within'",
        ),
        ({"max_downtime": 0}, "argument 'max_downtime' must be > 0"),
        ({"selector": ""}, "argument 'selector' is required"),
    ],
)
def test_bad_thresholds_are_refused(k8s, arguments, why):
    call = {"selector": "app=web", "namespace": k8s.namespace, **arguments}
    with pytest.raises(ActivityFailed) as refused:
        probes.pod_kill_outcome(**call)
    assert why in str(refused.value)
