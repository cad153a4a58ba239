"""The in-test API server answers the real kubernetes client as Kubernetes does."""

import json
import time
import urllib.error
import urllib.request

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from chaospika.k8s import _client


@pytest.fixture
def core(k8s):
    return _client.api(None).core


def names(pod_list) -> list[str]:
    return sorted(pod.metadata.name for pod in pod_list.items)


def test_pods_are_listed_by_label_selector(k8s, core):
    k8s.cluster.add_deployment(k8s.namespace, "web", 2, {"app": "web", "tier": "front"})
    k8s.cluster.add_statefulset(k8s.namespace, "db", 1, {"app": "db"})
    k8s.cluster.add_pod(k8s.namespace, "debug", {"run": "debug"})
    k8s.cluster.add_deployment("other", "web", 1, {"app": "web"})
    web = k8s.names("app=web")

    assert (
        names(core.list_namespaced_pod(k8s.namespace, label_selector="app=web")) == web
    )
    assert names(
        core.list_namespaced_pod(k8s.namespace, label_selector="app!=web")
    ) == ["db-0", "debug"]
    assert names(
        core.list_namespaced_pod(k8s.namespace, label_selector="app in (db, x)")
    ) == ["db-0"]
    assert names(
        core.list_namespaced_pod(k8s.namespace, label_selector="app notin (web)")
    ) == ["db-0", "debug"]
    assert names(core.list_namespaced_pod(k8s.namespace, label_selector="tier")) == web
    assert names(core.list_namespaced_pod(k8s.namespace, label_selector="!app")) == [
        "debug"
    ]
    assert len(core.list_namespaced_pod(k8s.namespace).items) == 4
    by_name = core.list_namespaced_pod(
        k8s.namespace, field_selector="metadata.name=db-0"
    )
    assert names(by_name) == ["db-0"]
    with pytest.raises(ApiException) as bad:
        core.list_namespaced_pod(k8s.namespace, label_selector="app in ()")
    assert bad.value.status == 400


def test_a_missing_object_is_a_404_status(k8s, core):
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("nope", k8s.namespace)
    status = json.loads(missing.value.body)
    assert missing.value.status == 404
    assert status["kind"] == "Status" and status["reason"] == "NotFound"
    assert status["message"] == 'pods "nope" not found'
    with pytest.raises(ApiException) as gone:
        core.delete_namespaced_pod("nope", k8s.namespace)
    assert gone.value.status == 404


def test_requests_without_the_token_are_unauthorized(k8s):
    request = urllib.request.Request(f"{k8s.server.url}/api/v1/namespaces/shop/pods")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            request, timeout=5
        )
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["reason"] == "Unauthorized"


def test_delete_honours_the_grace_period_and_the_uid_precondition(k8s, core):
    k8s.cluster.recreate = False
    k8s.cluster.add_statefulset(k8s.namespace, "db", 2, {"app": "db"})
    uid = core.read_namespaced_pod("db-0", k8s.namespace).metadata.uid

    stale = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid="not-" + uid)
    )
    with pytest.raises(ApiException) as conflict:
        core.delete_namespaced_pod("db-0", k8s.namespace, body=stale)
    assert conflict.value.status == 409
    assert "db-0" in k8s.names()

    core.delete_namespaced_pod(
        "db-0", k8s.namespace, body=client.V1DeleteOptions(grace_period_seconds=0)
    )
    assert "db-0" not in k8s.names()  # at once

    deleted = core.delete_namespaced_pod("db-1", k8s.namespace, grace_period_seconds=1)
    assert deleted.metadata.deletion_timestamp is not None
    assert (
        core.read_namespaced_pod(
            "db-1", k8s.namespace
        ).metadata.deletion_grace_period_seconds
        == 1
    )
    time.sleep(1.3)
    assert k8s.names() == []
    assert [(d["name"], d["grace"]) for d in k8s.cluster.deletes] == [
        ("db-0", 0),
        ("db-1", 1),
    ]


def test_the_controllers_recreate_a_deleted_pod_after_a_delay(k8s, core):
    k8s.cluster.add_deployment(k8s.namespace, "web", 2, {"app": "web"})
    (killed, kept) = k8s.names("app=web")
    apps = _client.api(None).apps
    assert (
        apps.read_namespaced_deployment("web", k8s.namespace).status.ready_replicas == 2
    )

    core.delete_namespaced_pod(killed, k8s.namespace, grace_period_seconds=0)
    deleted_at = time.monotonic()
    assert k8s.cluster.ready_pods(k8s.namespace, "app=web") == 1
    deadline = deleted_at + 5
    while (
        k8s.cluster.ready_pods(k8s.namespace, "app=web") < 2
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    took = time.monotonic() - deleted_at
    pods = core.list_namespaced_pod(k8s.namespace, label_selector="app=web").items
    assert len(pods) == 2 and killed not in names(client.V1PodList(items=pods))
    assert 0.55 <= took < 3  # 0.3 s to create, 0.3 s to become ready
    new = next(p for p in pods if p.metadata.name != kept)
    (owner,) = new.metadata.owner_references
    replica_set = apps.read_namespaced_replica_set(owner.name, k8s.namespace)
    assert owner.controller and owner.uid == replica_set.metadata.uid
    assert replica_set.metadata.owner_references[0].kind == "Deployment"


def test_pods_are_watched_from_a_resource_version(k8s, core):
    k8s.cluster.add_deployment(k8s.namespace, "web", 1, {"app": "web"})
    k8s.cluster.add_deployment(k8s.namespace, "api", 1, {"app": "api"})
    listed = core.list_namespaced_pod(k8s.namespace, label_selector="app=web")
    (pod,) = listed.items
    core.delete_namespaced_pod(pod.metadata.name, k8s.namespace, grace_period_seconds=0)
    core.delete_namespaced_pod(
        k8s.names("app=api")[0], k8s.namespace, grace_period_seconds=0
    )

    seen = []
    watcher = watch.Watch()
    for event in watcher.stream(
        core.list_namespaced_pod,
        k8s.namespace,
        label_selector="app=web",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=5,
    ):
        obj = event["object"]
        ready = any(
            c.type == "Ready" and c.status == "True"
            for c in obj.status.conditions or []
        )
        seen.append((event["type"], obj.metadata.name == pod.metadata.name, ready))
        if ready and event["type"] == "MODIFIED":
            watcher.stop()
    # Only app=web events: the deleted and recreated app=api pod is not seen.
    assert seen == [
        ("DELETED", True, True),
        ("ADDED", False, False),
        ("MODIFIED", False, True),
    ]


def test_a_watch_from_an_expired_version_is_410_gone(k8s, core):
    k8s.cluster.add_deployment(k8s.namespace, "web", 1, {"app": "web"})
    k8s.cluster.history.clear()
    k8s.cluster.add_pod(k8s.namespace, "late", {"app": "late"})
    with pytest.raises(ApiException) as expired:
        for _ in watch.Watch().stream(
            core.list_namespaced_pod,
            k8s.namespace,
            resource_version="1",
            timeout_seconds=2,
        ):
            pass
    assert expired.value.status == 410


def test_the_service_answers_while_a_pod_it_selects_is_ready(k8s, core):
    k8s.cluster.recreate = False
    k8s.cluster.add_deployment(k8s.namespace, "web", 1, {"app": "web"})
    service = k8s.service("app=web")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(service.url, timeout=5) as answer:
        assert answer.status == 200
    core.delete_namespaced_pod(
        k8s.names("app=web")[0], k8s.namespace, grace_period_seconds=0
    )
    with pytest.raises(urllib.error.HTTPError) as down:
        opener.open(service.url, timeout=5)
    assert down.value.code == 503
