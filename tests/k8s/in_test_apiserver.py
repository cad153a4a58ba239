"""An in-test Kubernetes API server: the REST paths chaospika.k8s and the
chaostoolkit-kubernetes probes it runs beside use, with Kubernetes' semantics,
and a controller loop that recreates deleted pods after a delay.

No real API server can be installed here, so the tests run the real
``kubernetes`` client against this one (``http.server`` in a thread on a free
loopback port, a bearer token required). It serves:

- ``GET /api/v1/namespaces/{ns}/pods`` with ``labelSelector`` (=, ==, !=, in,
  notin, exists, !exists, <, >), ``fieldSelector`` (metadata.name,
  metadata.namespace), and ``watch=true`` (events after ``resourceVersion``,
  ``timeoutSeconds``, 410 Expired for a version older than the history kept);
- ``GET`` and ``DELETE /api/v1/namespaces/{ns}/pods/{name}``: ``gracePeriodSeconds``
  (query or DeleteOptions body; 0 deletes at once, more marks the pod deleted
  with ``deletionTimestamp`` and removes it when the period ends),
  ``preconditions.uid`` (409 Conflict when it differs), 404 Status objects;
- ``GET /apis/apps/v1/namespaces/{ns}/{deployments,replicasets,statefulsets}``
  (list, with selectors) and ``.../{name}`` (read), with ownerReferences,
  resourceVersions and replica counts in ``status``.

The controller loop plays the ReplicaSet, StatefulSet and Deployment controllers
and the kubelet: a missing pod is created `create_delay` seconds after it went
missing, Pending, and is Running and Ready `ready_delay` seconds later. A
`Service` answers HTTP 200 while at least one pod it selects is ready, else 503,
so the downtime of a kill is really measured. What it does not do: scheduling,
admission, RBAC (one token), rollouts, list pagination.
"""

import copy
import json
import re
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from chaospika.k8s import _labels

__all__ = [
    "Cluster",
    "InTestApiServer",
    "Service",
    "use_kubeconfig",
    "write_kubeconfig",
]

HISTORY = 2000
TICK = 0.02
MAX_WATCH_SECONDS = 60
APPS = {
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "statefulsets": "StatefulSet",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = _status(code, reason, message, **details)


def _field_filter(text: str | None):
    """metadata.name / metadata.namespace field selectors (= == !=)."""
    if not text:
        return lambda obj: True
    tests = []
    for part in text.split(","):
        match = re.fullmatch(
            r"\s*(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(\S*)\s*", part
        )
        if not match:
            raise ApiError(400, "BadRequest", f"unsupported field selector {part!r}")
        field, op, value = match.groups()
        tests.append((field.split(".")[1], op, value))

    def check(obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return all((meta.get(key) == value) == (op != "!=") for key, op, value in tests)

    return check


class Cluster:
    """The objects, their resourceVersions and watch history, and the controllers."""

    def __init__(self, create_delay: float = 0.5, ready_delay: float = 0.5) -> None:
        self.create_delay = create_delay
        self.ready_delay = ready_delay
        self.recreate = True
        self.ignore_label_selectors = False  # like an emulator that ignores them
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 0
        self.history: deque = deque(maxlen=HISTORY)
        self.changed = threading.Condition(threading.RLock())
        self.deletes: list[dict[str, Any]] = []
        self.missing_since: dict[tuple[str, str], list[float]] = {}
        self.ready_at: dict[str, float] = {}
        self.remove_at: dict[str, float] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(
            target=self._loop, name="in-test-controllers", daemon=True
        )

    # ------------------------------------------------------------------ store
    def _bump(self, event: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.history.append((self.version, event, copy.deepcopy(obj)))
        self.changed.notify_all()

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self.changed:
            meta = obj["metadata"]
            key = (obj["kind"], meta["namespace"], meta["name"])
            event = "MODIFIED" if key in self.objects else "ADDED"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            self.objects[key] = obj
            self._bump(event, obj)
            return obj

    def remove(self, obj: dict[str, Any]) -> None:
        with self.changed:
            meta = obj["metadata"]
            self.objects.pop((obj["kind"], meta["namespace"], meta["name"]), None)
            self.ready_at.pop(meta["uid"], None)
            self.remove_at.pop(meta["uid"], None)
            self._bump("DELETED", obj)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.changed:
            return self.objects.get((kind, namespace, name))

    def of_kind(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.changed:
            return [
                obj
                for (k, ns, _), obj in sorted(self.objects.items())
                if k == kind and (namespace is None or ns == namespace)
            ]

    # -------------------------------------------------------------- workloads
    def _pod(
        self, namespace: str, name: str, labels: dict, owner: dict | None, ready: bool
    ) -> dict:
        reference = []
        if owner is not None:
            reference = [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "labels": dict(labels),
                "ownerReferences": reference,
            },
            "spec": {
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                "nodeName": "node-1",
                "terminationGracePeriodSeconds": 30,
            },
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "Ready", "status": "False"}],
            },
        }
        if ready:
            self._make_ready(pod)
        return pod

    @staticmethod
    def _make_ready(pod: dict) -> None:
        pod["status"] = {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        }

    def _workload(
        self,
        kind: str,
        namespace: str,
        name: str,
        replicas: int,
        labels: dict,
        owner=None,
    ) -> dict:
        obj = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "labels": dict(labels),
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(labels)},
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {
                        "containers": [
                            {"name": "app", "image": "registry.invalid/app:1"}
                        ]
                    },
                },
            },
            "status": {"replicas": 0, "readyReplicas": 0, "availableReplicas": 0},
        }
        if kind == "StatefulSet":
            obj["spec"]["serviceName"] = name
        if owner is not None:
            obj["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ]
        return obj

    def add_deployment(
        self, namespace: str, name: str, replicas: int, labels: dict
    ) -> dict:
        """A Deployment, its ReplicaSet and `replicas` ready pods."""
        deployment = self.put(
            self._workload("Deployment", namespace, name, replicas, labels)
        )
        suffix = uuid.uuid4().hex[:10]
        rs_labels = {**labels, "pod-template-hash": suffix}
        replica_set = self._workload(
            "ReplicaSet", namespace, f"{name}-{suffix}", replicas, rs_labels, deployment
        )
        self.put(replica_set)
        for _ in range(replicas):
            self.put(
                self._pod(
                    namespace,
                    f"{name}-{suffix}-{uuid.uuid4().hex[:5]}",
                    rs_labels,
                    replica_set,
                    True,
                )
            )
        self._update_statuses()
        return deployment

    def add_statefulset(
        self, namespace: str, name: str, replicas: int, labels: dict
    ) -> dict:
        """A StatefulSet and its pods name-0 .. name-(replicas-1), ready."""
        stateful_set = self.put(
            self._workload("StatefulSet", namespace, name, replicas, labels)
        )
        for ordinal in range(replicas):
            self.put(
                self._pod(namespace, f"{name}-{ordinal}", labels, stateful_set, True)
            )
        self._update_statuses()
        return stateful_set

    def add_pod(self, namespace: str, name: str, labels: dict) -> dict:
        """A bare pod: no controller recreates it."""
        return self.put(self._pod(namespace, name, labels, None, True))

    def pods(self, namespace: str, selector: str = "") -> list[dict]:
        requirements = _labels.parse(selector)
        return [
            pod
            for pod in self.of_kind("Pod", namespace)
            if _labels.matches(requirements, pod["metadata"].get("labels"))
        ]

    def ready_pods(self, namespace: str, selector: str) -> int:
        with self.changed:
            return sum(
                1
                for pod in self.pods(namespace, selector)
                if pod["status"].get("phase") == "Running"
                and not pod["metadata"].get("deletionTimestamp")
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in pod["status"]["conditions"]
                )
            )

    # ------------------------------------------------------------- controller
    def _owned(self, owner: dict) -> list[dict]:
        uid = owner["metadata"]["uid"]
        return [
            pod
            for pod in self.of_kind("Pod", owner["metadata"]["namespace"])
            if any(
                ref.get("uid") == uid and ref.get("controller")
                for ref in pod["metadata"].get("ownerReferences") or []
            )
        ]

    def _reconcile(self, now: float) -> None:
        for uid, when in list(self.remove_at.items()):
            if now >= when:
                pod = next(
                    (p for p in self.of_kind("Pod") if p["metadata"]["uid"] == uid),
                    None,
                )
                if pod is not None:
                    self.remove(pod)
        for uid, when in list(self.ready_at.items()):
            if now >= when:
                pod = next(
                    (p for p in self.of_kind("Pod") if p["metadata"]["uid"] == uid),
                    None,
                )
                self.ready_at.pop(uid, None)
                if pod is not None and not pod["metadata"].get("deletionTimestamp"):
                    self._make_ready(pod)
                    self._bump("MODIFIED", pod)
        for owner in self.of_kind("ReplicaSet") + self.of_kind("StatefulSet"):
            self._replace_missing(owner, now)
        self._update_statuses()

    def _replace_missing(self, owner: dict, now: float) -> None:
        meta = owner["metadata"]
        key = (meta["namespace"], meta["uid"])
        owned = self._owned(owner)
        active = [p for p in owned if not p["metadata"].get("deletionTimestamp")]
        if owner["kind"] == "StatefulSet":
            taken = {
                p["metadata"]["name"] for p in owned
            }  # a terminating pod keeps its name
            wanted = [f"{meta['name']}-{i}" for i in range(owner["spec"]["replicas"])]
            missing = [name for name in wanted if name not in taken]
        else:
            count = max(0, owner["spec"]["replicas"] - len(active))
            missing = [f"{meta['name']}-{uuid.uuid4().hex[:5]}" for _ in range(count)]
        since = self.missing_since.setdefault(key, [])
        del since[len(missing) :]
        while len(since) < len(missing):
            since.append(now)
        if not self.recreate:
            return
        labels = owner["spec"]["template"]["metadata"]["labels"]
        for index, name in enumerate(missing):
            if now - since[index] >= self.create_delay:
                pod = self.put(self._pod(meta["namespace"], name, labels, owner, False))
                self.ready_at[pod["metadata"]["uid"]] = now + self.ready_delay
                since[index] = float("inf")  # created: no longer missing
        self.missing_since[key] = [s for s in since if s != float("inf")]

    def _update_statuses(self) -> None:
        with self.changed:
            counts: dict[str, tuple[int, int]] = {}
            for owner in self.of_kind("ReplicaSet") + self.of_kind("StatefulSet"):
                active = [
                    p
                    for p in self._owned(owner)
                    if not p["metadata"].get("deletionTimestamp")
                ]
                ready = sum(
                    1
                    for p in active
                    if p["status"].get("phase") == "Running"
                    and p["status"]["conditions"][0]["status"] == "True"
                )
                counts[owner["metadata"]["uid"]] = (len(active), ready)
                self._set_status(owner, len(active), ready)
            for deployment in self.of_kind("Deployment"):
                uid = deployment["metadata"]["uid"]
                total = ready = 0
                for replica_set in self.of_kind(
                    "ReplicaSet", deployment["metadata"]["namespace"]
                ):
                    refs = replica_set["metadata"].get("ownerReferences") or []
                    if any(ref["uid"] == uid for ref in refs):
                        total += counts[replica_set["metadata"]["uid"]][0]
                        ready += counts[replica_set["metadata"]["uid"]][1]
                self._set_status(deployment, total, ready)

    def _set_status(self, obj: dict, total: int, ready: int) -> None:
        status = {
            "replicas": total,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": total,
        }
        if obj["status"] != status:
            obj["status"] = status
            self._bump("MODIFIED", obj)

    def _loop(self) -> None:
        while not self.stopped.wait(TICK):
            with self.changed:
                self._reconcile(time.monotonic())

    # ---------------------------------------------------------------- deletes
    def delete_pod(
        self, namespace: str, name: str, grace: int | None, uid: str | None
    ) -> dict:
        with self.changed:
            pod = self.get("Pod", namespace, name)
            if pod is None:
                raise ApiError(
                    404, "NotFound", f'pods "{name}" not found', name=name, kind="pods"
                )
            if uid is not None and pod["metadata"]["uid"] != uid:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on Pod "{name}": Precondition failed: '
                    f"UID in precondition: {uid}, UID in object meta: {pod['metadata']['uid']}",
                    name=name,
                    kind="pods",
                )
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            self.deletes.append(
                {
                    "namespace": namespace,
                    "name": name,
                    "grace": grace,
                    "uid": pod["metadata"]["uid"],
                }
            )
            if grace == 0:
                self.remove(pod)
                return copy.deepcopy(pod)
            if not pod["metadata"].get("deletionTimestamp"):
                pod["metadata"]["deletionTimestamp"] = _now()
                pod["metadata"]["deletionGracePeriodSeconds"] = grace
                self.remove_at[pod["metadata"]["uid"]] = time.monotonic() + grace
                self._bump("MODIFIED", pod)
            return copy.deepcopy(pod)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        with self.changed:
            self.changed.notify_all()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "InTestApiServer"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization")
        self.server.seen_authorization.append(header)
        return header == f"Bearer {self.server.token}"

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {
            key: values[-1]
            for key, values in parse_qs(parts.query, keep_blank_values=True).items()
        }
        self.server.requests.append((method, parts.path, query))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        if not self._authorized():
            self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        try:
            self._route(method, parts.path, query, body)
        except ApiError as error:
            self._send(error.status["code"], error.status)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _route(self, method: str, path: str, query: dict, body: dict) -> None:
        cluster = self.server.cluster
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?", path)
        if match:
            namespace, name = match.groups()
            if name is None and method == "GET":
                if query.get("watch") in ("true", "1"):
                    self._watch("Pod", namespace, query)
                else:
                    self._list("Pod", "PodList", "v1", namespace, query)
                return
            if name is not None and method == "GET":
                self._send(200, self._read("Pod", namespace, name, "pods"))
                return
            if name is not None and method == "DELETE":
                grace = query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
                uid = (body.get("preconditions") or {}).get("uid")
                pod = cluster.delete_pod(
                    namespace, name, None if grace is None else int(grace), uid
                )
                self._send(200, pod)
                return
        match = re.fullmatch(
            r"/apis/apps/v1/namespaces/([^/]+)/(deployments|replicasets|statefulsets)(?:/([^/]+))?",
            path,
        )
        if match and method == "GET":
            namespace, plural, name = match.groups()
            kind = APPS[plural]
            if name is None:
                self._list(kind, f"{kind}List", "apps/v1", namespace, query)
            else:
                self._send(200, self._read(kind, namespace, name, plural))
            return
        raise ApiError(
            404, "NotFound", "the server could not find the requested resource"
        )

    def _read(self, kind: str, namespace: str, name: str, plural: str) -> dict:
        obj = self.server.cluster.get(kind, namespace, name)
        if obj is None:
            raise ApiError(
                404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural
            )
        with self.server.cluster.changed:
            return copy.deepcopy(obj)

    def _filter(self, query: dict):
        try:
            requirements = _labels.parse(query.get("labelSelector", ""))
        except _labels.SelectorError as error:
            raise ApiError(
                400, "BadRequest", f"unable to parse requirement: {error}"
            ) from None
        if self.server.cluster.ignore_label_selectors:
            requirements = []
        fields = _field_filter(query.get("fieldSelector"))
        return lambda obj: (
            _labels.matches(requirements, obj["metadata"].get("labels")) and fields(obj)
        )

    def _list(
        self, kind: str, list_kind: str, api_version: str, namespace: str, query: dict
    ) -> None:
        keep = self._filter(query)
        cluster = self.server.cluster
        with cluster.changed:
            items = [
                copy.deepcopy(obj)
                for obj in cluster.of_kind(kind, namespace)
                if keep(obj)
            ]
            version = str(cluster.version)
        self._send(
            200,
            {
                "kind": list_kind,
                "apiVersion": api_version,
                "metadata": {"resourceVersion": version},
                "items": items,
            },
        )

    def _chunk(self, event: str, obj: dict) -> None:
        line = json.dumps({"type": event, "object": obj}).encode() + b"\n"
        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.flush()

    def _watch(self, kind: str, namespace: str, query: dict) -> None:
        keep = self._filter(query)
        cluster = self.server.cluster
        timeout = min(
            int(query.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS
        )
        deadline = time.monotonic() + timeout
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        since = query.get("resourceVersion") or "0"
        with cluster.changed:
            if since == "0":
                position = cluster.version
                backlog = [
                    ("ADDED", copy.deepcopy(obj))
                    for obj in cluster.of_kind(kind, namespace)
                    if keep(obj)
                ]
            else:
                position = int(since)
                oldest = (
                    cluster.history[0][0] if cluster.history else cluster.version + 1
                )
                if position < oldest - 1:
                    backlog = [
                        (
                            "ERROR",
                            _status(
                                410,
                                "Expired",
                                f"too old resource version: {position} ({oldest - 1})",
                            ),
                        )
                    ]
                    deadline = 0
                else:
                    backlog = []
        try:
            for event, obj in backlog:
                self._chunk(event, obj)
            while time.monotonic() < deadline and not cluster.stopped.is_set():
                with cluster.changed:
                    events = [
                        (event, obj)
                        for version, event, obj in cluster.history
                        if version > position
                        and obj["kind"] == kind
                        and obj["metadata"]["namespace"] == namespace
                    ]
                    position = cluster.version
                    if not events:
                        cluster.changed.wait(
                            timeout=max(0.0, min(0.5, deadline - time.monotonic()))
                        )
                for event, obj in events:
                    if keep(obj):
                        self._chunk(event, obj)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


class _LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1:`port` (0: a free one), started and
    stopped by the test."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


class InTestApiServer(_LoopbackServer):
    """The API server on 127.0.0.1:`port` (0: a free one) for `cluster`."""

    def __init__(self, cluster: Cluster, token: str, port: int = 0) -> None:
        super().__init__(_Handler, port)
        self.cluster = cluster
        self.token = token
        self.requests: list[tuple[str, str, dict]] = []
        self.seen_authorization: list[str | None] = []

    @property
    def url(self) -> str:
        return self.base_url


class _ServiceHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Service"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        ready = self.server.cluster.ready_pods(
            self.server.namespace, self.server.selector
        )
        data = json.dumps({"ready_pods": ready}).encode()
        self.send_response(200 if ready else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Service(_LoopbackServer):
    """A loopback HTTP service whose availability follows the ready pods it selects."""

    def __init__(self, cluster: Cluster, namespace: str, selector: str) -> None:
        super().__init__(_ServiceHandler)
        self.cluster, self.namespace, self.selector = cluster, namespace, selector

    @property
    def url(self) -> str:
        return f"{self.base_url}/health"


def write_kubeconfig(
    path: Path, server: str, token: str, current: str = "in-test"
) -> Path:
    """A kubeconfig with two contexts: "in-test" (the right token) and "stale"
    (a wrong one); `current` is the current context."""
    users = {"tester": token, "stale-user": "not-the-token"}
    text = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "in-test", "cluster": {"server": server}}],
            "users": [
                {"name": name, "user": {"token": value}}
                for name, value in users.items()
            ],
            "contexts": [
                {
                    "name": "in-test",
                    "context": {"cluster": "in-test", "user": "tester"},
                },
                {
                    "name": "stale",
                    "context": {"cluster": "in-test", "user": "stale-user"},
                },
            ],
            "current-context": current,
        }
    )
    path.write_text(text)  # JSON is YAML
    return path


def use_kubeconfig(monkeypatch: Any, path: Path | str) -> None:
    """Point this process's Kubernetes client setup at `path`.

    The client reads KUBECONFIG once, when `kubernetes.config` is imported; a
    `chaos run` starts with it set, a test process moves it per test.
    """
    from kubernetes.config import kube_config

    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
