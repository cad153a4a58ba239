"""Owners of pods (Deployment, ReplicaSet, StatefulSet) and their ready pods.

A pod's owner is its controller (the ownerReference with ``controller: true``);
a ReplicaSet controlled by a Deployment stands for that Deployment. An owner
has recovered when at least ``spec.replicas`` of its pods are ready: phase
Running, condition Ready true, not being deleted, and not one of the pods
that were killed.
"""

from dataclasses import dataclass
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaospika.k8s import _labels
from chaospika.k8s._client import Api

__all__ = [
    "Owner",
    "controller_of",
    "is_ready",
    "members",
    "owner_of",
    "read_owner",
]

KINDS = ("Deployment", "ReplicaSet", "StatefulSet")


@dataclass(frozen=True)
class Owner:
    """A workload that recreates its pods; `selector` selects them."""

    kind: str
    name: str
    namespace: str
    uid: str
    selector: str
    desired: int

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "desired_count": self.desired,
        }


def controller_of(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference of `pod` marked as its controller, or None."""
    for reference in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return reference
    return None


def is_ready(pod: dict[str, Any]) -> bool:
    """Running, Ready, and not being deleted."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or []
    )


def _read(api: Api, namespace: str, kind: str, name: str) -> dict[str, Any]:
    method = {
        "Deployment": api.apps.read_namespaced_deployment,
        "ReplicaSet": api.apps.read_namespaced_replica_set,
        "StatefulSet": api.apps.read_namespaced_stateful_set,
    }[kind]
    return api.plain(
        api.call(f"read {kind} {namespace}/{name}", method, name, namespace)
    )


def _owner(namespace: str, obj: dict[str, Any]) -> Owner:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    kind = obj.get("kind") or ""
    try:
        selector = _labels.from_label_selector(spec.get("selector"))
    except _labels.SelectorError as error:
        raise ActivityFailed(
            f"{kind} {namespace}/{meta.get('name')}: {error}"
        ) from None
    if not selector:
        raise ActivityFailed(
            f"{kind} {namespace}/{meta.get('name')} has an empty pod selector"
        )
    replicas = spec.get("replicas")
    return Owner(
        kind=kind,
        name=meta.get("name"),
        namespace=namespace,
        uid=meta.get("uid"),
        selector=selector,
        desired=1 if replicas is None else int(replicas),
    )


def read_owner(api: Api, namespace: str, kind: str, name: str) -> Owner:
    """The owner `kind`/`name` as it is now."""
    if kind not in KINDS:
        raise ActivityFailed(
            f"unsupported owner kind {kind!r}: one of {', '.join(KINDS)}"
        )
    obj = _read(api, namespace, kind, name)
    obj.setdefault("kind", kind)
    return _owner(namespace, obj)


def owner_of(
    api: Api, namespace: str, pod: dict[str, Any], cache: dict | None = None
) -> Owner:
    """The workload that recreates `pod`; ActivityFailed if there is none we know."""
    cache = {} if cache is None else cache
    name = (pod.get("metadata") or {}).get("name")
    reference = controller_of(pod)
    if reference is None:
        raise ActivityFailed(
            f"pod {namespace}/{name} has no controller (no ownerReference with "
            "controller: true): nothing would recreate it"
        )
    kind, owner_name = reference.get("kind"), reference.get("name")
    if kind not in ("ReplicaSet", "StatefulSet"):
        raise ActivityFailed(
            f"pod {namespace}/{name} is controlled by {kind} {owner_name}: only pods "
            "of a ReplicaSet (Deployment) or a StatefulSet are killed, whose "
            "recovery is measured"
        )
    key = (kind, owner_name)
    if key not in cache:
        obj = _read(api, namespace, kind, owner_name)
        obj.setdefault("kind", kind)
        above = controller_of(obj) if kind == "ReplicaSet" else None
        if above is not None and above.get("kind") == "Deployment":
            cache[key] = read_owner(api, namespace, "Deployment", above.get("name"))
        else:
            cache[key] = _owner(namespace, obj)
    return cache[key]


def member_controllers(api: Api, owner: Owner) -> set[str]:
    """The uids of the objects whose pods count for `owner` (its ReplicaSets
    for a Deployment, itself otherwise)."""
    if owner.kind != "Deployment":
        return {owner.uid}
    listed = api.call(
        f"list ReplicaSets of {owner.namespace}/{owner.ref}",
        api.apps.list_namespaced_replica_set,
        owner.namespace,
        label_selector=owner.selector,
    )
    uids = set()
    for replica_set in api.plain(listed).get("items") or []:
        above = controller_of(replica_set)
        if above is not None and above.get("uid") == owner.uid:
            uids.add(replica_set["metadata"]["uid"])
    return uids


def members(pods: list[dict[str, Any]], controllers: set[str]) -> list[dict[str, Any]]:
    """The pods of `pods` whose controller is one of `controllers`."""
    return [pod for pod in pods if (controller_of(pod) or {}).get("uid") in controllers]
