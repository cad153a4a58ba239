"""Kubernetes probes: ready pods, time to recover from a pod kill, downtime, verdict.

`wait_for_recovery` times how long the owner of the pods `kill_pods` killed
(a Deployment, ReplicaSet or StatefulSet) takes to have its desired ready pods
again, from the kill, and grades it PASS / WARN / FAIL against `pass_within`
and `warn_within`. `downtime` samples a URL over a window (run it with
``"background": true`` before the kill) and reports the longest outage.
`pod_kill_outcome` joins both for the steady-state hypothesis: FAIL when the
owner did not recover within `warn_within` or the service was down for
`max_downtime` or more.
"""

import logging
import time

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika import ledger
from chaospika._validate import (
    require_duration,
    require_text,
)
from chaospika.http.probes import _longest_outage, _p95_ms, _sample
from chaospika.k8s import _client, _recovery, _select, _state, _workloads
from chaospika.k8s.actions import KIND

__all__ = ["downtime", "pod_kill_outcome", "pods_ready", "wait_for_recovery"]

logger = logging.getLogger("chaostoolkit")


def _thresholds(pass_within: object, warn_within: object) -> tuple[float, float]:
    passing = require_duration(
        "pass_within", pass_within, allow_equal=False, maximum=86400
    )
    warning = require_duration(
        "warn_within", warn_within, allow_equal=False, maximum=86400
    )
    if warning < passing:
        raise ActivityFailed(
            f"argument 'warn_within' ({warn_within!r}) must not be shorter than "
            f"'pass_within' ({pass_within!r})"
        )
    return passing, warning


def _grade(
    recovered: bool, seconds: float | None, passing: float, warning: float
) -> str:
    """PASS below `passing`, WARN below `warning`, FAIL otherwise or not recovered."""
    if not recovered or seconds is None or seconds >= warning:
        return "FAIL"
    return "WARN" if seconds >= passing else "PASS"


def _selector_request(selector: str, namespace: str) -> _select.Request:
    return _select.request(selector, namespace)


def pods_ready(
    selector: str,
    namespace: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Whether every owner of the pods `selector` matches has its desired ready pods.

    Returns {"ready", "owners": [{"kind", "name", "desired_count", "ready_count"}],
    "ready_count", "desired_count", "pods_count", "unowned": [pods no workload
    recreates]}. No matching pod is not ready.
    """
    wanted = _selector_request(selector, namespace)
    api = _client.api(secrets)
    pods, _ = _select.list_pods(api, wanted.namespace, wanted.selector)
    cache: dict = {}
    owners: dict[str, _workloads.Owner] = {}
    unowned = []
    for pod in pods:
        try:
            owner = _workloads.owner_of(api, wanted.namespace, pod, cache)
        except ActivityFailed:
            unowned.append(pod["metadata"]["name"])
            continue
        owners.setdefault(owner.uid, owner)
    report = []
    for owner in owners.values():
        _, _, view, _ = _recovery._snapshot(
            api, owner.namespace, owner.kind, owner.name
        )
        report.append(
            {**owner.as_dict(), "ready_count": _recovery.ready_count(view, set())}
        )
    ready = bool(report) and all(o["ready_count"] >= o["desired_count"] for o in report)
    return {
        "ready": ready,
        "owners": report,
        "ready_count": sum(o["ready_count"] for o in report),
        "desired_count": sum(o["desired_count"] for o in report),
        "pods_count": len(pods),
        "unowned": unowned,
    }


def _measure(kill: _state.Kill, limit: float) -> dict:
    """Wait for the owner of `kill` (until `limit` after the kill) and time it."""
    api = _client.api(kill.secrets)
    owner = kill.owner
    result = _recovery.wait_until_recovered(
        api,
        kill.namespace,
        owner.kind,
        owner.name,
        kill.uids,
        kill.killed_monotonic,
        kill.killed_monotonic + limit,
    )
    if result["recovered"]:
        ledger.resolve(KIND, {"kill_id": kill.kill_id}, "owner recovered")
    return result


def wait_for_recovery(
    selector: str,
    namespace: str,
    pass_within: float = 30,
    warn_within: float = 60,
    timeout: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Time until the owner of the pods last killed by `selector` is whole again.

    Measured from the kill of `kill_pods` (same `selector` and `namespace`, this
    run) to the moment the owner (Deployment, ReplicaSet or StatefulSet) has
    ``spec.replicas`` ready pods, none of them killed; without such a kill, from
    now, for the owners of the pods `selector` matches. Waits until `timeout`
    after the kill (default `warn_within`). Grades it: "PASS" under
    `pass_within` (default 30 s), "WARN" under `warn_within` (default 60 s),
    "FAIL" otherwise (durations: seconds or "30s"). Returns {"recovered",
    "recovery_seconds", "upper_bound" (the owner was already whole at the first
    read: it may have been earlier), "verdict", "since" ("kill" or "probe"), "killed",
    "owners", "ready_count", "desired_count", "pass_within_seconds",
    "warn_within_seconds"}.
    """
    wanted = _selector_request(selector, namespace)
    passing, warning = _thresholds(pass_within, warn_within)
    limit = (
        warning
        if timeout is None
        else require_duration("timeout", timeout, maximum=86400)
    )
    kill = _state.last_kill(wanted.namespace, wanted.selector)
    if kill is not None:
        results = [_measure(kill, limit)]
        since, killed = "kill", [pod["name"] for pod in kill.pods]
    else:
        api = _client.api(secrets)
        pods, _ = _select.list_pods(api, wanted.namespace, wanted.selector)
        cache: dict = {}
        owners = {}
        for pod in pods:
            owner = _workloads.owner_of(api, wanted.namespace, pod, cache)
            owners.setdefault(owner.uid, owner)
        if not owners:
            raise ActivityFailed(
                f"no pod matches {wanted.selector!r} in namespace {wanted.namespace} "
                "and no pod of it was killed in this run: nothing to wait for"
            )
        start = time.monotonic()
        results = [
            _recovery.wait_until_recovered(
                api, wanted.namespace, o.kind, o.name, set(), start, start + limit
            )
            for o in owners.values()
        ]
        since, killed = "probe", []
    recovered = all(r["recovered"] for r in results)
    seconds = (
        max((r["recovery_seconds"] or 0.0) for r in results) if recovered else None
    )
    verdict = _grade(recovered, seconds, passing, warning)
    result = {
        "recovered": recovered,
        "recovery_seconds": seconds,
        "upper_bound": any(r.get("upper_bound") for r in results),
        "verdict": verdict,
        "since": since,
        "killed": killed,
        "owners": [{**r["owner"], "ready_count": r["ready_count"]} for r in results],
        "ready_count": sum(r["ready_count"] for r in results),
        "desired_count": sum(r["desired_count"] for r in results),
        "pass_within_seconds": passing,
        "warn_within_seconds": warning,
    }
    if kill is not None:
        _state.record_recovery(kill, result)
    owners_text = ", ".join(o["kind"] + "/" + o["name"] for o in result["owners"])
    if recovered:
        logger.log(
            logging.INFO if verdict == "PASS" else logging.WARNING,
            "k8s: %s recovered in %.3f s: %s (PASS < %g s, WARN < %g s)",
            owners_text,
            seconds,
            verdict,
            passing,
            warning,
        )
    else:
        logger.error(
            "k8s: %s did not recover within %g s (%d of %d ready): FAIL",
            owners_text,
            limit,
            result["ready_count"],
            result["desired_count"],
        )
    return result


def downtime(
    url: str,
    duration: float = 20.0,
    interval: float = 0.1,
    timeout: float = 1.0,
    name: str = "downtime",
    expected_status: list = None,
    method: str = "GET",
    headers: dict = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Sample `url` every `interval` for `duration` and report its longest outage.

    Meant to run with ``"background": true`` just before a kill, over a window
    longer than the downtime that matters. Sampling as
    `chaospika.http.probes.availability` (a success is a status in
    `expected_status`, default any 2xx or 3xx; no proxy, no redirects). The result
    is kept under `name` for `pod_kill_outcome`. Returns {"downtime_seconds"
    (longest time from a failure to the next success, or to the end),
    "ended_down" (the window ended in an outage: the downtime is longer),
    "ratio", "attempts", "failures", "statuses", "p95_ms", "window_seconds"}.
    """
    label = require_text("name", name)
    started_at = time.time()
    samples, statuses, latencies, started = _sample(
        url, duration, interval, timeout, expected_status, method, headers
    )
    failures = sum(1 for _, _, ok in samples if not ok)
    result = {
        "downtime_seconds": _longest_outage(samples),
        "ended_down": not samples[-1][2],
        "ratio": round((len(samples) - failures) / len(samples), 4),
        "attempts": len(samples),
        "failures": failures,
        "statuses": statuses,
        "p95_ms": _p95_ms(latencies),
        "window_seconds": round(time.monotonic() - started, 3),
        "started_at": round(started_at, 3),
        "ended_at": round(time.time(), 3),
    }
    _state.record_downtime(label, result)
    logger.info(
        "k8s: %s was down for at most %.3f s over %.1f s (%d of %d requests failed)",
        url,
        result["downtime_seconds"],
        result["window_seconds"],
        failures,
        len(samples),
    )
    return result


def _judge_downtime(
    outage: dict | None, label: str, kill: _state.Kill, ceiling: float | None
) -> tuple[bool, str | None]:
    """Whether the measured downtime passes `ceiling`, and why (None: not judged)."""
    if ceiling is None:
        return True, None
    if outage is None:
        return False, f"no downtime probe named {label!r} ran: downtime unknown"
    if not outage["started_at"] <= kill.killed_at <= outage["ended_at"]:
        return False, f"the downtime window of {label!r} did not cover the kill"
    seconds = outage["downtime_seconds"]
    if seconds >= ceiling:
        return (
            False,
            f"the service was down for {seconds:.3f} s, not under {ceiling:g} s",
        )
    if outage["ended_down"]:
        return False, (
            f"the service was still down when the {label!r} window ended: "
            "downtime unknown, make its duration longer"
        )
    return True, f"longest outage {seconds:.3f} s, under {ceiling:g} s"


def pod_kill_outcome(
    selector: str,
    namespace: str,
    pass_within: float = 30,
    warn_within: float = 60,
    max_downtime: float = 10,
    downtime_name: str = "downtime",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """The verdict on the last pod kill by `selector`: PASS, WARN or FAIL; "ok" unless FAIL.

    FAIL when the owner did not have its desired ready pods again within
    `warn_within` of the kill, or when the `downtime` probe named `downtime_name`
    saw an outage of `max_downtime` or more, ended in an outage, did not cover the
    kill, or did not run (`max_downtime` null: downtime is not judged). WARN when
    the recovery took `pass_within` or more. Uses the measure of
    `wait_for_recovery` if it ran, else measures now. Before any kill in this run:
    {"killed": false, "ok": true, "verdict": null}. Returns {"killed", "ok",
    "verdict", "reasons", "recovery_seconds", "downtime_seconds", "pods", "owner",
    "pass_within_seconds", "warn_within_seconds", "max_downtime_seconds"}.
    """
    wanted = _selector_request(selector, namespace)
    passing, warning = _thresholds(pass_within, warn_within)
    ceiling = None
    if max_downtime is not None:
        ceiling = require_duration(
            "max_downtime", max_downtime, allow_equal=False, maximum=86400
        )
    label = require_text("downtime_name", downtime_name)
    kill = _state.last_kill(wanted.namespace, wanted.selector)
    base = {
        "pass_within_seconds": passing,
        "warn_within_seconds": warning,
        "max_downtime_seconds": ceiling,
    }
    if kill is None:
        return {
            **base,
            "killed": False,
            "ok": True,
            "verdict": None,
            "reasons": [f"no pod was killed by {wanted.selector!r} in this run yet"],
            "recovery_seconds": None,
            "downtime_seconds": None,
        }
    recovery = kill.recovery
    if recovery is None:
        recovery = _measure(kill, warning)
        _state.record_recovery(kill, recovery)
    seconds = recovery.get("recovery_seconds")
    grade = _grade(bool(recovery.get("recovered")), seconds, passing, warning)
    reasons = []
    if grade == "FAIL":
        reasons.append(
            f"{kill.owner.ref} did not have its {kill.owner.desired} ready pods again "
            f"within {warning:g} s of the kill"
            + ("" if seconds is None else f" (it took {seconds:.3f} s)")
        )
    elif grade == "WARN":
        reasons.append(f"recovery took {seconds:.3f} s, not under {passing:g} s")
    outage = _state.downtime(label) if ceiling is not None else None
    down_seconds = None if outage is None else outage["downtime_seconds"]
    down_ok, down_reason = _judge_downtime(outage, label, kill, ceiling)
    if down_reason:
        reasons.append(down_reason)
    verdict = "FAIL" if grade == "FAIL" or not down_ok else grade
    logger.log(
        {"PASS": logging.INFO, "WARN": logging.WARNING}.get(verdict, logging.ERROR),
        "k8s: pod kill of %s: %s: %s",
        kill.owner.ref,
        verdict,
        "; ".join(reasons) or f"recovered in {seconds:.3f} s",
    )
    return {
        **base,
        "killed": True,
        "ok": verdict != "FAIL",
        "verdict": verdict,
        "reasons": reasons,
        "recovered": bool(recovery.get("recovered")),
        "recovery_seconds": seconds,
        "downtime_seconds": down_seconds,
        "pods": [pod["name"] for pod in kill.pods],
        "owner": kill.owner.as_dict(),
    }
