"""Wait until an owner has its desired ready pods again, timed by watch events.

The pods of the owner are listed, then watched from that list's
resourceVersion; the recovery time is taken when the event that makes the
owner whole arrives. Each watch lasts at most `CYCLE_SECONDS`, after which the
owner (its desired count may change) and its pods are read again; an expired
resourceVersion (410) also starts a new cycle.
"""

import math
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaospika._secrets import redact_text
from chaospika.k8s import _select, _workloads
from chaospika.k8s._client import Api, describe

__all__ = ["ready_count", "wait_until_recovered"]

CYCLE_SECONDS = 5.0
MAX_CYCLES = 10_000


def ready_count(pods: dict[str, dict[str, Any]], excluded: set[str]) -> int:
    """Ready pods of `pods` (by uid) not in `excluded`."""
    return sum(
        1
        for uid, pod in pods.items()
        if uid not in excluded and _workloads.is_ready(pod)
    )


def _snapshot(api: Api, namespace: str, kind: str, name: str):
    owner = _workloads.read_owner(api, namespace, kind, name)
    controllers = _workloads.member_controllers(api, owner)
    pods, version = _select.list_pods(api, namespace, owner.selector)
    view = {
        pod["metadata"]["uid"]: pod for pod in _workloads.members(pods, controllers)
    }
    return owner, controllers, view, version


def wait_until_recovered(
    api: Api,
    namespace: str,
    kind: str,
    name: str,
    excluded: set[str],
    since: float,
    deadline: float,
) -> dict[str, Any]:
    """Wait (until the monotonic `deadline`) for `kind`/`name` to have its desired
    ready pods, none of `excluded`; time it from the monotonic `since`."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError, ReadTimeoutError

    owner = None
    view: dict[str, dict[str, Any]] = {}
    for cycle in range(MAX_CYCLES):
        owner, controllers, view, version = _snapshot(api, namespace, kind, name)
        if ready_count(view, excluded) >= owner.desired:
            result = _result(owner, view, excluded, since, time.monotonic())
            # Found whole by the first read: it may have been whole earlier.
            result["upper_bound"] = cycle == 0
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        window = max(1, math.ceil(min(CYCLE_SECONDS, remaining)))
        # A silent stream ends at the deadline (read timeout), not at the window.
        read_timeout = min(window, remaining) + 0.05
        watcher = watch.Watch()
        try:
            for event in watcher.stream(
                api.core.list_namespaced_pod,
                namespace,
                label_selector=owner.selector,
                resource_version=version,
                timeout_seconds=window,
                _request_timeout=(5.0, read_timeout),
            ):
                if time.monotonic() >= deadline:  # what comes later is not counted
                    watcher.stop()
                    break
                pod = event.get("raw_object") or {}
                uid = (pod.get("metadata") or {}).get("uid")
                controller = _workloads.controller_of(pod) or {}
                if uid and controller.get("uid") in controllers:
                    if event.get("type") == "DELETED":
                        view.pop(uid, None)
                    else:
                        view[uid] = pod
                if ready_count(view, excluded) >= owner.desired:
                    watcher.stop()
                    return _result(owner, view, excluded, since, time.monotonic())
        except ApiException as error:
            if error.status == 410:
                continue  # the resourceVersion expired: list again
            raise ActivityFailed(
                f"watch pods of {namespace}/{kind}/{name}: {describe(error)}"
            ) from None
        except ReadTimeoutError:
            pass  # nothing came until the deadline or the window's end
        except (HTTPError, OSError) as error:
            raise ActivityFailed(
                f"watch pods of {namespace}/{kind}/{name}: the Kubernetes API server "
                f"did not answer ({type(error).__name__}: {redact_text(str(error))[:300]})"
            ) from None
        if time.monotonic() >= deadline:
            break
    result = _result(owner, view, excluded, since, None)
    result["waited_seconds"] = round(time.monotonic() - since, 3)
    return result


def _result(
    owner: Any,
    view: dict[str, dict[str, Any]],
    excluded: set[str],
    since: float,
    at: float | None,
) -> dict[str, Any]:
    ready = ready_count(view, excluded)
    return {
        "recovered": at is not None,
        "upper_bound": False,
        "recovery_seconds": None if at is None else round(at - since, 3),
        "waited_seconds": None if at is None else round(at - since, 3),
        "owner": owner.as_dict() if owner else None,
        "ready_count": ready,
        "desired_count": owner.desired if owner else None,
    }
