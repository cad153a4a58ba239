"""kill_pods: the pods of one workload, picked at random, killed; an empty or
over-wide selection touches nothing; the ledger and the safety control know it."""

import logging
import random

import pytest
from chaoslib.discovery.discover import discover_actions, discover_probes
from chaoslib.exceptions import ActivityFailed

from chaospika import ledger
from chaospika.controls import _faults
from chaospika.k8s import actions
from chaospika.k8s.faults import pod_targets

KILL = "chaospika.k8s.actions.kill_pods"


@pytest.fixture
def shop(k8s):
    """web: a Deployment of 5; db: a StatefulSet of 2 named mongodb; a bare pod."""
    k8s.cluster.add_deployment(k8s.namespace, "web", 5, {"app": "web", "tier": "front"})
    k8s.cluster.add_statefulset(
        k8s.namespace, "mongodb", 2, {"app": "db", "tier": "back"}
    )
    k8s.cluster.add_pod(k8s.namespace, "debug", {"app": "debug"})
    k8s.cluster.add_deployment("other", "web", 2, {"app": "web"})
    return k8s


def uids(k8s) -> dict:
    return {
        p["metadata"]["name"]: p["metadata"]["uid"] for p in k8s.cluster.of_kind("Pod")
    }


@pytest.mark.parametrize(
    ("arguments", "why"),
    [
        ({"selector": ""}, "argument 'selector' is required"),
        ({"selector": "   "}, "argument 'selector' is required"),
        ({"selector": None}, "argument 'selector' is required"),
        ({"selector": "app!=web"}, "names no label value to hit"),
        ({"selector": "tier notin (x)"}, "names no label value to hit"),
        ({"selector": "app"}, "names no label value to hit"),
        ({"selector": "app in ()"}, "argument 'selector'"),
        ({"namespace": ""}, "argument 'namespace' is required"),
        ({"namespace": None}, "argument 'namespace' is required"),
        ({"namespace": "Shop_1"}, "argument 'namespace' must be a namespace name"),
        ({"selector": "app=nothing"}, "no pod matches"),
        ({"namespace": "empty"}, "no pod matches"),
        ({"selector": "app in (web,db)"}, "the selection is too wide"),
        ({"selector": "tier in (front,back)"}, "belong to 2 workloads"),
        ({"selector": "app=debug"}, "nothing would recreate it"),
        ({"mode": "fixed", "qty": 6}, "qty=6 but only 5 pod(s)"),
        ({"mode": "fixed", "qty": 0}, "argument 'qty' must be >= 1"),
        ({"mode": "percent", "qty": 10}, "is no pod"),
        ({"mode": "percent", "qty": 101}, "argument 'qty' must be <= 100"),
        ({"mode": "random"}, "argument 'mode' must be one of"),
        (
            {"name_pattern": "web"},
            "named like 'web'",
        ),  # anchored: no pod is named "web"
        (
            {"selector": "app=db", "name_pattern": "db-0"},
            "named like 'db-0'",
        ),  # not mongodb-0
        ({"name_pattern": "web-("}, "not a regular expression"),
        ({"grace_period": -1}, "argument 'grace_period' must be >= 0"),
    ],
)
def test_an_empty_or_over_wide_selection_touches_nothing(shop, arguments, why, caplog):
    before = uids(shop)
    call = {"selector": "app=web", "namespace": shop.namespace, **arguments}

    with pytest.raises(ActivityFailed) as refused:
        actions.kill_pods(**call)

    assert why in str(refused.value)
    assert shop.cluster.deletes == [] and uids(shop) == before
    assert ledger.outstanding() == []
    assert "about to kill" not in caplog.text


def test_a_server_that_ignores_label_selectors_is_caught(shop):
    shop.cluster.ignore_label_selectors = True
    before = uids(shop)
    with pytest.raises(ActivityFailed) as refused:
        actions.kill_pods("app=web", shop.namespace)
    assert "it may ignore label selectors" in str(refused.value)
    assert shop.cluster.deletes == [] and uids(shop) == before


def test_one_pod_is_killed_at_once_and_reported(shop, caplog):
    caplog.set_level(logging.INFO, logger="chaostoolkit")
    web = shop.names("app=web")

    result = actions.kill_pods("app=web", shop.namespace)

    (killed,) = result["killed"]
    assert killed["name"] in web and killed["uid"]
    assert shop.cluster.deletes == [
        {
            "namespace": shop.namespace,
            "name": killed["name"],
            "grace": 0,
            "uid": killed["uid"],
        }
    ]
    assert killed["name"] not in shop.names()  # grace period 0: gone at once
    assert result["killed_count"] == 1 and result["candidates_count"] == 5
    assert result["owner"] == {
        "kind": "Deployment",
        "name": "web",
        "namespace": "shop",
        "desired_count": 5,
    }
    assert result["grace_period_seconds"] == 0 and isinstance(result["seed"], int)
    # Pods with the same labels in another namespace are not candidates.
    assert len(shop.cluster.pods("other", "app=web")) == 2
    announce = next(
        r.getMessage() for r in caplog.records if "about to kill" in r.getMessage()
    )
    assert killed["name"] in announce and "Deployment/web" in announce
    assert (
        "selector 'app=web'" in announce
        and "undo:" in announce
        and "recreates it" in announce
    )


def test_the_kill_is_in_the_ledger_before_any_delete(shop, monkeypatch):
    recorded = []
    original = ledger.record

    def record(kind, target, undo, ttl=None):
        recorded.append((kind, target, undo, list(shop.cluster.deletes)))
        return original(kind, target, undo, ttl=ttl)

    monkeypatch.setattr(ledger, "record", record)
    result = actions.kill_pods("app=db", shop.namespace, mode="all")

    ((kind, target, undo, deletes_then),) = recorded
    assert deletes_then == []
    assert kind == "k8s.kill_pods" and sorted(target["pods"]) == [
        "mongodb-0",
        "mongodb-1",
    ]
    assert target["owner"] == "StatefulSet/mongodb" and target["selector"] == "app=db"
    assert (
        undo["func"] == "undo_kill_pods" and undo["args"]["owner_kind"] == "StatefulSet"
    )
    (fault,) = ledger.outstanding()
    assert fault.id == result["fault"] and fault.state == "applied"


def test_the_pick_is_random_and_reproducible_with_a_seed(shop):
    web = shop.names("app=web")
    arguments = {
        "selector": "app=web",
        "namespace": shop.namespace,
        "mode": "fixed",
        "qty": 2,
    }
    picks = [pod_targets({**arguments, "seed": seed}) for seed in range(6)]
    for seed, targets in enumerate(picks):
        assert [t["pod"] for t in targets] == random.Random(seed).sample(web, 2)
    hit = {t["pod"] for targets in picks for t in targets}
    assert len(hit) >= 4  # not the alphabetical first ones every time

    result = actions.kill_pods("app=web", shop.namespace, seed=7)
    assert result["seed"] == 7
    assert [p["name"] for p in result["killed"]] == random.Random(7).sample(web, 1)


def test_fixed_percent_and_all_modes(shop):
    assert (
        actions.kill_pods("app=web", shop.namespace, mode="percent", qty=40)[
            "killed_count"
        ]
        == 2
    )
    assert (
        actions.kill_pods("app=web", shop.namespace, mode="fixed", qty=2)[
            "killed_count"
        ]
        == 2
    )
    assert actions.kill_pods("app=db", shop.namespace, mode="all")["killed_count"] == 2
    assert len(shop.cluster.deletes) == 6
    assert {d["namespace"] for d in shop.cluster.deletes} == {shop.namespace}


def test_a_grace_period_drains_and_the_terminating_pod_is_no_candidate(shop):
    first = actions.kill_pods("app=db", shop.namespace, grace_period=5)
    (killed,) = first["killed"]
    assert shop.cluster.deletes[0]["grace"] == 5
    assert killed["name"] in shop.names()  # terminating, not gone
    second = actions.kill_pods("app=db", shop.namespace)
    assert second["candidates_count"] == 1 and second["left_out"]["terminating"] == 1
    assert second["killed"][0]["name"] != killed["name"]


def test_the_undo_waits_for_the_owner_to_be_whole(shop):
    result = actions.kill_pods("app=web", shop.namespace, mode="fixed", qty=2)
    report = ledger.undo(result["fault"])
    assert report["undone"] is True and report["result"]["recovered"] is True
    assert shop.cluster.ready_pods(shop.namespace, "app=web") == 5
    assert ledger.outstanding() == []


def test_an_owner_that_does_not_recover_leaves_the_kill_in_force(shop):
    shop.cluster.recreate = False
    result = actions.kill_pods("app=db", shop.namespace)
    (killed,) = result["killed"]
    with pytest.raises(ActivityFailed) as failed:
        actions.undo_kill_pods(
            shop.namespace, "StatefulSet", "mongodb", [killed["uid"]], timeout=0.5
        )
    assert "has 1 of 2 ready pods" in str(failed.value) and "still in force" in str(
        failed.value
    )
    assert [f.id for f in ledger.outstanding()] == [result["fault"]]


def test_the_safety_control_resolves_and_caps_the_targets(shop):
    fault = _faults.FAULTS[KILL]
    policy = _faults.Policy()
    arguments = {"selector": "app=web", "namespace": shop.namespace}

    entry, refused = _faults.check_fault("kill", fault, arguments, policy, live=True)
    assert refused == [] and entry["fault"] == "k8s.kill_pods"
    (target,) = entry["targets"]
    assert target["owner"] == "Deployment/web" and sorted(
        target["candidates"]
    ) == shop.names("app=web")

    seeded = {**arguments, "seed": 3}
    (target,) = _faults.check_fault("kill", fault, seeded, policy, live=True)[0][
        "targets"
    ]
    assert [p["name"] for p in actions.kill_pods(**seeded)["killed"]] == [target["pod"]]

    _, refused = _faults.check_fault(
        "kill", fault, {**arguments, "mode": "all"}, policy, live=True
    )
    assert any("more than max_targets=1" in why for why in refused)
    for wide in (
        {**arguments, "selector": ""},
        {**arguments, "selector": "app in (web,db)"},
    ):
        _, refused = _faults.check_fault("kill", fault, wide, policy, live=True)
        assert refused and "the target resolves to nothing" in refused[0]
    assert len(shop.cluster.deletes) == 1  # only the seeded kill above


def test_the_activities_are_discoverable():
    assert [a["name"] for a in discover_actions("chaospika.k8s.actions")] == [
        "kill_pods"
    ]
    assert sorted(a["name"] for a in discover_probes("chaospika.k8s.probes")) == [
        "downtime",
        "pod_kill_outcome",
        "pods_ready",
        "wait_for_recovery",
    ]
