"""Kubernetes faults: kill pods picked at random from one workload, never more.

Pods are selected by a required label selector in a required namespace (see
`chaospika.k8s._select` for what is refused as empty or too wide), picked at
random (reproducibly with a `seed`), and deleted with a grace period of 0 by
default: a kill, not a drain. Each delete carries the pod's uid as a
precondition, so a pod recreated under the same name (a StatefulSet's) is
never hit by mistake. The API client is set up by chaostoolkit-kubernetes
(kubeconfig, context, in-cluster, or host and token from the secrets).

A killed pod cannot be brought back: its owner recreates it. The kill is
recorded in the fault ledger before any delete, with an undo that does not
restore anything but waits for the owner to have its desired ready pods again
(`undo_kill_pods`): the record stays outstanding until the owner is whole
(`wait_for_recovery` marks it undone when it sees that).
"""

import logging
import time
import uuid

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika import ledger
from chaospika._validate import require_duration, require_int
from chaospika.k8s import _client, _recovery, _select, _state
from chaospika.k8s._client import ApiFailed

__all__ = ["kill_pods"]

logger = logging.getLogger("chaostoolkit")

KIND = "k8s.kill_pods"
# How long the ledger undo waits for the owner (the seed's WARN limit).
UNDO_WAIT_SECONDS = 60.0


def kill_pods(
    selector: str,
    namespace: str,
    mode: str = "one",
    qty: float = 1,
    seed: int = None,
    name_pattern: str = None,
    grace_period: int = 0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Kill pods of one workload chosen at random among those `selector` matches.

    `selector` (a label selector with at least one ``key=value`` or ``key in
    (...)``) and `namespace` are required. `mode`: "one" (default), "fixed"
    (`qty` pods), "percent" (`qty` percent of the candidates, rounded down;
    refused when that is no pod) or "all".
    Only running pods not being deleted are candidates, and only those whose
    whole name matches `name_pattern` if given. Refused, with nothing deleted:
    no candidate, pods the selector does not match in the server's answer,
    candidates of several workloads or of none (a bare pod would not come
    back), more pods asked for than there are. `seed` makes the pick
    reproducible; without it a seed is drawn and returned. `grace_period`
    seconds (default 0: killed at once). Returns {"killed": [{"name", "uid",
    "node"}], "killed_count", "candidates_count", "matched_count", "owner",
    "seed", "grace_period_seconds", "fault", "kill_id", "killed_at"}.
    """
    wanted = _select.request(selector, namespace, mode, qty, seed, name_pattern)
    grace = require_int("grace_period", grace_period, minimum=0, maximum=3600)
    api = _client.api(secrets)
    selection = _select.resolve(api, wanted)
    chosen, used_seed = _select.choose(selection, wanted.seed)
    owner = selection.owner
    names = [pod["metadata"]["name"] for pod in chosen]
    kill_id = f"kill-{uuid.uuid4().hex[:12]}"
    logger.warning(
        "k8s: about to kill %d of %d candidate pod(s) of %s in namespace %s "
        "(selector %r, seed %d): %s, grace period %d s; undo: none can restore a "
        "killed pod, its %s recreates it; the ledger undo waits up to %.0f s for "
        "%d ready pod(s) of it",
        len(chosen),
        len(selection.candidates),
        owner.ref,
        wanted.namespace,
        wanted.selector,
        used_seed,
        ", ".join(names),
        grace,
        owner.kind,
        UNDO_WAIT_SECONDS,
        owner.desired,
    )
    target = {
        "namespace": wanted.namespace,
        "selector": wanted.selector,
        "owner": owner.ref,
        "pods": names,
        "kill_id": kill_id,
    }
    undo = {
        "module": __name__,
        "func": "undo_kill_pods",
        "args": {
            "namespace": wanted.namespace,
            "owner_kind": owner.kind,
            "owner_name": owner.name,
            "killed_uids": [pod["metadata"]["uid"] for pod in chosen],
            "kill_id": kill_id,
            "timeout": UNDO_WAIT_SECONDS,
        },
    }
    from kubernetes import client as k8s

    fault = ledger.record(KIND, target, undo)
    killed, gone = [], []
    killed_at, killed_monotonic = time.time(), time.monotonic()
    for pod in chosen:
        meta = pod["metadata"]
        options = k8s.V1DeleteOptions(
            grace_period_seconds=grace,
            preconditions=k8s.V1Preconditions(uid=meta["uid"]),
        )
        try:
            api.call(
                f"delete pod {wanted.namespace}/{meta['name']}",
                api.core.delete_namespaced_pod,
                meta["name"],
                wanted.namespace,
                body=options,
            )
        except ApiFailed as error:
            if error.status not in (404, 409):  # 409: the uid changed, a new pod
                ledger.applied(
                    fault, killed=[p["name"] for p in killed], error=str(error)
                )
                raise ActivityFailed(
                    f"{error}; killed before the failure: "
                    f"{', '.join(p['name'] for p in killed) or 'none'}"
                ) from None
            gone.append(meta["name"])
            continue
        killed.append(
            {
                "name": meta["name"],
                "uid": meta["uid"],
                "node": (pod.get("spec") or {}).get("nodeName"),
            }
        )
    if not killed:
        ledger.resolve(KIND, {"kill_id": kill_id}, "already gone")
        raise ActivityFailed(
            f"none of the chosen pods could be killed, they were gone: {', '.join(gone)}"
        )
    ledger.applied(fault, killed=[p["name"] for p in killed], gone=gone)
    _state.record_kill(
        _state.Kill(
            kill_id=kill_id,
            namespace=wanted.namespace,
            selector=wanted.selector,
            owner=owner,
            pods=killed,
            killed_at=killed_at,
            killed_monotonic=killed_monotonic,
            secrets=secrets,
        )
    )
    logger.info(
        "k8s: killed %s of %s in namespace %s (fault %s)",
        ", ".join(p["name"] for p in killed),
        owner.ref,
        wanted.namespace,
        fault.id,
    )
    return {
        "killed": killed,
        "killed_count": len(killed),
        "already_gone": gone,
        "candidates_count": len(selection.candidates),
        "matched_count": len(selection.matched),
        "left_out": selection.left_out,
        "owner": owner.as_dict(),
        "namespace": wanted.namespace,
        "selector": wanted.selector,
        "mode": wanted.mode,
        "seed": used_seed,
        "grace_period_seconds": grace,
        "fault": fault.id,
        "kill_id": kill_id,
        "killed_at": round(killed_at, 3),
    }


def undo_kill_pods(
    namespace: str,
    owner_kind: str,
    owner_name: str,
    killed_uids: list,
    kill_id: str = None,
    timeout: float = UNDO_WAIT_SECONDS,
) -> dict:
    """Ledger undo of a pod kill: wait until the owner has its desired ready pods.

    Restores nothing (the owner recreates the pods); raises ActivityFailed if the
    owner is not whole within `timeout`, so the record stays outstanding. Uses the
    secrets of the kill when it ran in this process, else the kubeconfig and
    environment.
    """
    limit = require_duration("timeout", timeout, maximum=3600)
    kill = _state.kill_by_id(kill_id) if kill_id else None
    api = _client.api(kill.secrets if kill else None)
    now = time.monotonic()
    result = _recovery.wait_until_recovered(
        api, namespace, owner_kind, owner_name, set(killed_uids), now, now + limit
    )
    if not result["recovered"]:
        raise ActivityFailed(
            f"{owner_kind} {namespace}/{owner_name} has {result['ready_count']} of "
            f"{result['desired_count']} ready pods after {limit:g} s: the kill is "
            "still in force"
        )
    logger.info(
        "k8s: %s %s/%s has its %d ready pods again",
        owner_kind,
        namespace,
        owner_name,
        result["desired_count"],
    )
    return result
