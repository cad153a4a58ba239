"""Container faults through the Docker engine: stop, kill, pause, restart; and their undos.

Targets are chosen as `chaospika.docker._select` says: exact `name`, label
`selector` and/or anchored `name_pattern`, then `mode` one/all/fixed/percent
(`qty`, `seed`). An empty selection, and one wider than `max_targets` (default
1), raises before anything is touched. Each fault logs what it is about to do,
to which containers and how it is undone, then writes one ledger record per
container BEFORE touching it; the undos (`undo_stop`, `undo_kill`,
`undo_pause`, `undo_restart`, called by the ledger, not activities) sit beside
the faults and are safe to run twice. With `ttl` a detached watchdog undoes
each fault when the ttl has passed and no Chaos Toolkit process is left.
`start_containers` and `unpause_containers` put containers back and mark
their faults undone.

The engine is the local one (`docker_url`, default $DOCKER_HOST or
unix:///var/run/docker.sock; only a unix socket or loopback TCP is accepted).
"""

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika import ledger
from chaospika._validate import require_duration
from chaospika.docker import _engine, _select
from chaospika.ledger import watchdog
from chaospika.process._pidfile import parse_signal

__all__ = [
    "kill_containers",
    "pause_containers",
    "restart_containers",
    "start_containers",
    "stop_containers",
    "unpause_containers",
]

logger = logging.getLogger("chaostoolkit")

# Signals whose default action ends the process: the kill waits for the exit.
TERMINATING = {"SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT"}
# An undo started while a stop may still be running in the engine waits this
# much longer than the stop's own timeout for it to end.
STOP_SLACK_SECONDS = 5.0
RESTARTING_WAIT_SECONDS = 10.0


###############################################################################
# Selection
###############################################################################
def plan(action: str, arguments: dict[str, Any]) -> tuple[str, _select.Selection]:
    """Resolve a fault's targets from its arguments without touching anything
    (the safety control's pre-flight): (engine URL, selection)."""
    state, defaults = PLANNED[action]
    args = {**defaults, **arguments}
    url = _engine.docker_url(args.get("docker_url"))
    targets = _select.targets(
        args.get("name"),
        args.get("selector"),
        args.get("name_pattern"),
        args.get("mode"),
        args.get("qty"),
        args.get("seed"),
        args.get("max_targets"),
    )
    with _engine.connected(url) as client:
        found = targets.resolve(client, state)
    return url, found


def _names(summaries: list[dict]) -> str:
    return ", ".join(_select.summary_name(s) for s in summaries)


###############################################################################
# Applying a fault, container by container, through the ledger
###############################################################################
def _conflict(error: Exception) -> bool:
    """The engine refused because the container changed state meanwhile."""
    import docker

    return isinstance(error, docker.errors.NotFound) or (
        isinstance(error, docker.errors.APIError) and error.status_code in (304, 409)
    )


def _apply_fault(
    kind: str,
    url: str,
    client: Any,
    found: _select.Selection,
    life: float | None,
    undo_func: str,
    undo_args: dict[str, Any],
    apply: Callable[[str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """Record, then apply, the fault on each selected container, one by one.

    SIGINT/SIGTERM that come while the engine applies it wait for its end (then
    interrupt the run, whose safety control undoes what the ledger holds).
    """
    touched: list[dict[str, Any]] = []
    for summary in found.selected:
        cid, name = summary["Id"], _select.summary_name(summary)
        target = {"container": name, "id": cid, "docker_url": url}
        args = {"container_id": cid, "name": name, "docker_url": url, **undo_args}
        if "since" in args:  # the undo tells this instance from a later one
            args["since"] = time.time()
        undo = {"module": __name__, "func": undo_func, "args": args}
        fault = ledger.record(kind, target, undo, ttl=life)
        if life is not None:
            watchdog.arm(fault)  # not while signals are held: it would inherit that
        try:
            with _engine.signals_held():
                details = apply(cid)
                ledger.applied(fault, **details)
        except Exception as error:
            if not _conflict(error):
                done = ", ".join(t["name"] for t in touched) or "none"
                raise ActivityFailed(
                    f"{kind} of container {name} failed: {error} (already "
                    f"done: {done}; the ledger can undo them)"
                ) from error
            ledger.resolve(kind, {"id": cid}, "not applied")
            document = _engine.find(client, cid)
            status = _engine.facts(document)["status"] if document else "removed"
            logger.warning("%s: container %s is %s: not applied", kind, name, status)
            continue
        document = _engine.find(client, cid)
        after = _engine.facts(document) if document else {"status": "removed"}
        touched.append(
            {
                "name": name,
                "id": cid,
                "status_before": summary.get("State"),
                "status": after.get("status"),
                "fault": fault.id,
                **details,
            }
        )
    return touched


def _result(action: str, found: _select.Selection, touched: list[dict]) -> dict:
    return {
        "action": action,
        "containers": touched,
        "touched_count": len(touched),
        "matched_count": len(found.matched),
        "eligible_count": len(found.eligible),
    }


def _ttl(ttl: Any) -> float | None:
    return None if ttl is None else require_duration("ttl", ttl, allow_equal=False)


def _whole_seconds(name: str, value: Any) -> int:
    """A stop timeout for the engine, which takes whole seconds (rounded up)."""
    return math.ceil(require_duration(name, value, maximum=600))


def _announce(
    verb: str, found: _select.Selection, url: str, undo: str, life: float | None
) -> None:
    expiry = (
        f"; undone by a watchdog after ttl {life:g} s if chaos is gone" if life else ""
    )
    logger.info(
        "docker: about to %s %d container(s) on %s: %s (chosen from %d matching %s); "
        "undo: %s (recorded in the fault ledger first)%s",
        verb,
        len(found.selected),
        url,
        _names(found.selected),
        len(found.eligible),
        found.criteria.describe(),
        undo,
        expiry,
    )


###############################################################################
# Faults
###############################################################################
def stop_containers(
    name: str = None,
    selector: str = None,
    name_pattern: str = None,
    mode: str = "one",
    qty: float = None,
    seed: int = None,
    max_targets: int = 1,
    timeout: float = 10,
    ttl: float = None,
    docker_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Stop running containers (`docker stop`: the stop signal, SIGKILL after `timeout`).

    Chooses among the running containers matched by `name` (exact, or a list),
    `selector` ("k=v,k2") and/or `name_pattern` (anchored regex) with `mode`
    one/all/fixed/percent, `qty`, `seed`; an empty selection or one wider than
    `max_targets` raises and touches nothing. `timeout` is whole seconds (rounded
    up). Undo: start each again (ledger `undo_stop`); with `ttl` a watchdog does it
    if chaos is gone. Returns {"containers": [{name, id, status_before, status,
    fault}], "touched_count", "matched_count", "eligible_count"}.
    """
    seconds = _whole_seconds("timeout", timeout)
    life = _ttl(ttl)
    url = _engine.docker_url(docker_url)
    targets = _select.targets(
        name, selector, name_pattern, mode, qty, seed, max_targets
    )
    with _engine.connected(url) as client:
        found = targets.resolve(client, "running")
        _announce(f"stop (timeout {seconds} s)", found, url, "start it again", life)

        def apply(cid: str) -> dict:
            client.stop(cid, timeout=seconds)
            return {"timeout_seconds": seconds}

        wait = {"since": None, "wait": seconds + STOP_SLACK_SECONDS}
        touched = _apply_fault(
            "docker.stop", url, client, found, life, "undo_stop", wait, apply
        )
    return _result("stop", found, touched)


def kill_containers(
    name: str = None,
    selector: str = None,
    name_pattern: str = None,
    mode: str = "one",
    qty: float = None,
    seed: int = None,
    max_targets: int = 1,
    signal: str = "SIGKILL",
    timeout: float = 10,
    ttl: float = None,
    docker_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Send `signal` (default SIGKILL) to running containers (`docker kill`).

    Selection as in `stop_containers`. For SIGKILL/SIGTERM/SIGINT/SIGQUIT it waits
    up to `timeout` for each container to exit (``exited`` says whether it did).
    Undo: start each container again unless it runs (its restart policy may have
    restarted it) (ledger `undo_kill`); with `ttl` a watchdog does it if chaos is
    gone.
    """
    chosen = parse_signal(signal).name
    wait = require_duration("timeout", timeout, maximum=600)
    life = _ttl(ttl)
    url = _engine.docker_url(docker_url)
    targets = _select.targets(
        name, selector, name_pattern, mode, qty, seed, max_targets
    )
    with _engine.connected(url) as client:
        found = targets.resolve(client, "running")
        undo_text = "start it again unless its restart policy did"
        _announce(f"send {chosen} to", found, url, undo_text, life)

        def apply(cid: str) -> dict:
            client.kill(cid, signal=chosen)
            exited = False
            if chosen in TERMINATING:
                exited = bool(_engine.wait_for(lambda: not _running(client, cid), wait))
            return {"signal": chosen, "exited": exited}

        undo_wait = wait + STOP_SLACK_SECONDS if chosen in TERMINATING else 0.0
        touched = _apply_fault(
            "docker.kill",
            url,
            client,
            found,
            life,
            "undo_kill",
            {"since": None, "wait": undo_wait},
            apply,
        )
    return _result("kill", found, touched)


def pause_containers(
    name: str = None,
    selector: str = None,
    name_pattern: str = None,
    mode: str = "one",
    qty: float = None,
    seed: int = None,
    max_targets: int = 1,
    ttl: float = None,
    docker_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Freeze running containers (`docker pause`, the cgroup freezer).

    Selection as in `stop_containers`. Undo: unpause (ledger `undo_pause`, or the
    action `unpause_containers`); with `ttl` a watchdog does it if chaos is gone.
    """
    life = _ttl(ttl)
    url = _engine.docker_url(docker_url)
    targets = _select.targets(
        name, selector, name_pattern, mode, qty, seed, max_targets
    )
    with _engine.connected(url) as client:
        found = targets.resolve(client, "running")
        _announce("pause", found, url, "unpause it", life)

        def apply(cid: str) -> dict:
            client.pause(cid)
            return {}

        touched = _apply_fault(
            "docker.pause", url, client, found, life, "undo_pause", {}, apply
        )
    return _result("pause", found, touched)


def restart_containers(
    name: str = None,
    selector: str = None,
    name_pattern: str = None,
    mode: str = "one",
    qty: float = None,
    seed: int = None,
    max_targets: int = 1,
    timeout: float = 10,
    docker_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Restart running containers (`docker restart`: stop with `timeout`, then start).

    Selection as in `stop_containers`. A restart ends with the container running;
    one cut short (chaos killed mid-restart) is started by the ledger
    (`undo_restart`).
    """
    seconds = _whole_seconds("timeout", timeout)
    url = _engine.docker_url(docker_url)
    targets = _select.targets(
        name, selector, name_pattern, mode, qty, seed, max_targets
    )
    with _engine.connected(url) as client:
        found = targets.resolve(client, "running")
        undo_text = "none needed; one cut short is started again"
        _announce(f"restart (timeout {seconds} s)", found, url, undo_text, None)

        def apply(cid: str) -> dict:
            client.restart(cid, timeout=seconds)
            return {"timeout_seconds": seconds}

        touched = _apply_fault(
            "docker.restart", url, client, found, None, "undo_restart", {}, apply
        )
        for item in touched:
            if _running(client, item["id"]):
                ledger.resolve("docker.restart", {"id": item["id"]}, "restarted")
    return _result("restart", found, touched)


###############################################################################
# Putting containers back
###############################################################################
def _running(client: Any, cid: str) -> bool:
    document = _engine.find(client, cid)
    return document is not None and _engine.facts(document)["running"]


def start_containers(
    name: str = None,
    selector: str = None,
    name_pattern: str = None,
    mode: str = "all",
    qty: float = None,
    seed: int = None,
    timeout: float = 10,
    docker_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Start the stopped containers matched (default all of them); a rollback.

    Containers already running are left alone and not an error (a name that
    matches no container is). Waits up to `timeout` for each to run; fails if one
    exits at once. Their stop and kill faults are marked undone.
    """
    wait = require_duration("timeout", timeout, maximum=600)
    url = _engine.docker_url(docker_url)
    targets = _select.targets(name, selector, name_pattern, mode, qty, seed, None)
    with _engine.connected(url) as client:
        found = targets.resolve(client, "stopped", allow_empty=True)
        if found.selected:
            logger.info(
                "docker: starting %d container(s) on %s: %s",
                len(found.selected),
                url,
                _names(found.selected),
            )
        touched = []
        for summary in found.selected:
            report = _ensure_started(client, summary["Id"], None, 0.0, wait)
            touched.append({"name": _select.summary_name(summary), **report})
        for summary in found.matched:
            if _running(client, summary["Id"]):
                for kind in ("docker.stop", "docker.kill", "docker.restart"):
                    ledger.resolve(kind, {"id": summary["Id"]}, "start_containers")
    result = _result("start", found, touched)
    result["already_running"] = [
        _select.summary_name(s) for s in found.matched if s.get("State") == "running"
    ]
    return result


def unpause_containers(
    name: str = None,
    selector: str = None,
    name_pattern: str = None,
    mode: str = "all",
    qty: float = None,
    seed: int = None,
    docker_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Unpause the paused containers matched (default all of them); a rollback.

    Containers not paused are left alone and not an error (a name that matches no
    container is). Their pause faults are marked undone.
    """
    url = _engine.docker_url(docker_url)
    targets = _select.targets(name, selector, name_pattern, mode, qty, seed, None)
    with _engine.connected(url) as client:
        found = targets.resolve(client, "paused", allow_empty=True)
        touched = []
        for summary in found.selected:
            report = _unpause(client, summary["Id"], _select.summary_name(summary))
            touched.append({"name": _select.summary_name(summary), **report})
        for summary in found.matched:
            document = _engine.find(client, summary["Id"])
            if document is None or not _engine.facts(document)["paused"]:
                ledger.resolve(
                    "docker.pause", {"id": summary["Id"]}, "unpause_containers"
                )
    return _result("unpause", found, touched)


def _unpause(client: Any, cid: str, name: str) -> dict:
    import docker

    document = _engine.find(client, cid)
    if document is None:
        return {"id": cid, "unpaused": False, "reason": "container removed"}
    if not _engine.facts(document)["paused"]:
        return {"id": cid, "unpaused": False, "reason": "not paused"}
    try:
        client.unpause(cid)
    except docker.errors.APIError as error:
        if not _conflict(error):
            raise
    if _engine.facts(_engine.find(client, cid) or {})["paused"]:
        raise ActivityFailed(f"container {name} is still paused after unpause")
    logger.info("docker: unpaused container %s", name)
    return {"id": cid, "unpaused": True}


def _exit_report(client: Any, cid: str, name: str, facts: dict) -> str:
    try:
        tail = client.logs(cid, tail=10).decode(errors="replace")
    except Exception:  # noqa: BLE001 - the log is a courtesy
        tail = ""
    return (
        f"container {name} exited at once after its start (exit code "
        f"{facts.get('exit_code')}); its log ends with:\n{tail or '(nothing)'}"
    )


def _ensure_started(
    client: Any, cid: str, since: float | None, wait: float, timeout: float = 2.0
) -> dict:
    """Start `cid` unless it runs; first wait up to `wait` for a stop of the
    instance that ran at `since` that may still be going on in the engine."""
    import docker

    document = _engine.find(client, cid)
    if document is None:
        return {"id": cid, "started": False, "reason": "container removed"}
    facts = _engine.facts(document)
    name = facts["name"]
    up = facts["running"] or facts["paused"]
    if up and wait and since is not None and (facts["started_at"] or 0) <= since:

        def stopped() -> dict | None:
            current = _engine.facts(_engine.find(client, cid) or {})
            return None if current["running"] or current["paused"] else current

        facts = _engine.wait_for(stopped, wait) or _engine.facts(document)
    if facts["restarting"]:

        def settled() -> dict | None:
            current = _engine.facts(_engine.find(client, cid) or {})
            return None if current["restarting"] else current

        facts = _engine.wait_for(settled, RESTARTING_WAIT_SECONDS) or facts
    if facts["running"] or facts["paused"]:
        return {"id": cid, "started": False, "already_running": True}
    try:
        client.start(cid)
    except docker.errors.NotFound:
        return {"id": cid, "started": False, "reason": "container removed"}

    def running() -> dict | None:
        current = _engine.facts(_engine.find(client, cid) or {})
        return current if current["running"] else None

    if not _engine.wait_for(running, timeout):
        raise ActivityFailed(_exit_report(client, cid, name, facts))
    logger.info("docker: started container %s", name)
    return {"id": cid, "started": True}


###############################################################################
# Ledger undos (called by the ledger, the safety control, `chaospika cleanup`
# and the ttl watchdog; each safe to run twice)
###############################################################################
def undo_stop(
    container_id: str,
    name: str,
    docker_url: str,
    since: float = None,
    wait: float = 0.0,
) -> dict:
    """Ledger undo of a stop: start the container unless it runs or was removed."""
    with _engine.connected(docker_url) as client:
        return {"name": name, **_ensure_started(client, container_id, since, wait)}


def undo_kill(
    container_id: str,
    name: str,
    docker_url: str,
    since: float = None,
    wait: float = 0.0,
) -> dict:
    """Ledger undo of a kill: start the container unless it runs again (its
    restart policy may have restarted it) or was removed."""
    with _engine.connected(docker_url) as client:
        return {"name": name, **_ensure_started(client, container_id, since, wait)}


def undo_pause(container_id: str, name: str, docker_url: str) -> dict:
    """Ledger undo of a pause: unpause the container if it is paused."""
    with _engine.connected(docker_url) as client:
        return {"name": name, **_unpause(client, container_id, name)}


def undo_restart(container_id: str, name: str, docker_url: str) -> dict:
    """Ledger undo of a restart cut short: start the container unless it runs."""
    with _engine.connected(docker_url) as client:
        return {"name": name, **_ensure_started(client, container_id, None, 0.0)}


# action -> (state its targets must be in, argument defaults), for `plan`.
PLANNED: dict[str, tuple[str, dict[str, Any]]] = {
    "stop_containers": ("running", {"mode": "one", "max_targets": 1}),
    "kill_containers": ("running", {"mode": "one", "max_targets": 1}),
    "pause_containers": ("running", {"mode": "one", "max_targets": 1}),
    "restart_containers": ("running", {"mode": "one", "max_targets": 1}),
}
