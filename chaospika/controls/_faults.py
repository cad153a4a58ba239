"""The faults the safety control knows: how to find their targets, what undoes them.

`FAULTS` maps an activity's ``module.func`` to a `FaultKind`; a new fault adds
itself with `register_fault`. `check_fault` resolves the targets of one fault
activity from its (substituted) arguments and says why it must be refused, if it
must: a target outside the allow-list, more targets than the cap, or (at the
start of the method) a target that resolves to nothing.
"""

import fnmatch
import importlib
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from chaoslib.exceptions import ActivityFailed

from chaospika.process import _guard, _pidfile

__all__ = [
    "DEFAULT_ALLOW_HOSTS",
    "FAULTS",
    "FaultKind",
    "Policy",
    "check_fault",
    "fault_of",
    "host_allowed",
    "pidfile_allowed",
    "process_targets",
    "register_fault",
    "url_targets",
]

DEFAULT_ALLOW_HOSTS = ("127.0.0.0/8", "::1", "localhost")

Targets = Callable[[dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class FaultKind:
    """A known fault: its ledger kind, how to find its targets, its cap, its undo."""

    kind: str
    targets: Targets
    max_targets: int = 1
    undo: str = ""


@dataclass(frozen=True)
class Policy:
    """What faults may touch: pidfile globs, host patterns, a cap on targets."""

    allow_pidfiles: tuple[str, ...] = ()
    allow_hosts: tuple[str, ...] = DEFAULT_ALLOW_HOSTS
    max_targets: int | None = None


FAULTS: dict[str, FaultKind] = {}


def register_fault(func: str, fault: FaultKind) -> None:
    """Make the activity function `func` ("module.func") a fault the control checks."""
    FAULTS[func] = fault


def fault_of(activity: dict[str, Any]) -> FaultKind | None:
    """The known fault `activity` applies, or None."""
    provider = activity.get("provider") or {}
    if provider.get("type") != "python":
        return None
    return FAULTS.get(f"{provider.get('module')}.{provider.get('func')}")


def process_targets(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """The process a process fault names (pidfile or pid), alive or not."""
    pidfile, pid = arguments.get("pidfile"), arguments.get("pid")
    try:
        found = _pidfile.locate(pidfile, pid, missing_ok=True)
    except ActivityFailed as error:
        return [{"pidfile": pidfile, "pid": pid, "alive": False, "reason": str(error)}]
    return [
        {
            "pidfile": found.pidfile,
            "pid": found.pid,
            "alive": found.alive,
            "reason": found.reason,
        }
    ]


def url_targets(*keys: str) -> Targets:
    """A target finder for faults aimed at URLs in the arguments `keys`."""

    def targets(arguments: dict[str, Any]) -> list[dict[str, Any]]:
        found = []
        for key in keys:
            values = arguments.get(key)
            for url in values if isinstance(values, list) else [values]:
                if url is None:
                    continue
                host = urlsplit(str(url)).hostname
                found.append({"url": str(url), "host": host, "alive": bool(host)})
        return found

    return targets


def _normal(path: str) -> str:
    """`path` absolute, with ``~`` expanded."""
    return os.path.abspath(os.path.expanduser(path))


def pidfile_allowed(pidfile: str, patterns: tuple[str, ...]) -> bool:
    """True if `pidfile` is one of `patterns` (literal paths or globs, ``~`` expanded)."""
    path, real = _normal(pidfile), os.path.realpath(_normal(pidfile))
    for pattern in patterns:
        wanted = _normal(pattern)
        if path == wanted or real == os.path.realpath(wanted):
            return True  # literally: a path with [ ] in it is not a glob class
        if fnmatch.fnmatchcase(path, wanted) or fnmatch.fnmatchcase(real, wanted):
            return True
    return False


def host_allowed(host: str | None, patterns: tuple[str, ...]) -> bool:
    """True if `host` is in a network of `patterns` (CIDR) or matches a name glob."""
    if not host:
        return False
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for pattern in patterns:
        try:
            network = ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            if address is None and fnmatch.fnmatchcase(host, pattern.lower()):
                return True
            continue
        if address is not None and address in network:
            return True
    return False


def _refusals(target: dict[str, Any], policy: Policy) -> list[str]:
    """Why `target` is outside the allow-list (empty: it is inside)."""
    if target.get("pidfile"):
        if not pidfile_allowed(str(target["pidfile"]), policy.allow_pidfiles):
            allowed = list(policy.allow_pidfiles) or "nothing (none given)"
            return [
                f"pidfile {target['pidfile']!r} is not in allow_pidfiles: {allowed}"
            ]
        return []
    if target.get("pid") is not None:
        alone = (
            f"pid {target['pid']} is named by pid alone: only processes named by a "
            "pidfile in allow_pidfiles may be faulted"
        )
        return [alone]
    if "host" in target and not host_allowed(target["host"], policy.allow_hosts):
        outside = (
            f"host {target['host']!r} of {target.get('url')!r} is not in "
            f"allow_hosts: {list(policy.allow_hosts)}"
        )
        return [outside]
    return []


def check_fault(
    name: str,
    fault: FaultKind,
    arguments: dict[str, Any],
    policy: Policy,
    live: bool,
) -> tuple[dict[str, Any], list[str]]:
    """Resolve the fault activity `name`; return its plan entry and refusals.

    With `live`, a target that resolves to nothing (no pidfile, dead pid) or that
    the process guard refuses is a refusal too.
    """
    targets = fault.targets(arguments)
    refusals = [f"{name}: {why}" for t in targets for why in _refusals(t, policy)]
    cap = policy.max_targets if policy.max_targets is not None else fault.max_targets
    if len(targets) > cap:
        refusals.append(
            f"{name}: {len(targets)} targets, more than max_targets={cap}: {targets}"
        )
    if live:
        if not targets:
            refusals.append(f"{name}: the fault resolves to no target")
        for target in targets:
            if not target.get("alive"):
                why = target.get("reason") or "not found"
                refusals.append(f"{name}: the target resolves to nothing: {why}")
            elif target.get("pid") is not None:
                guarded = _guard.refusal(int(target["pid"]), target.get("pidfile"))
                if guarded:
                    refusals.append(f"{name}: the process guard refuses: {guarded}")
    entry = {"activity": name, "fault": fault.kind, "targets": targets}
    entry["undo"] = fault.undo
    return entry, refusals


_PROCESS = "chaospika.process.actions"
register_fault(
    f"{_PROCESS}.kill_process",
    FaultKind(
        "process.kill",
        process_targets,
        undo="start the process again from <pidfile>.cmd.json (ledger undo_kill)",
    ),
)
register_fault(
    f"{_PROCESS}.pause_process",
    FaultKind("process.pause", process_targets, undo="SIGCONT (ledger undo_pause)"),
)
register_fault(
    f"{_PROCESS}.restart_process",
    FaultKind(
        "process.restart",
        process_targets,
        undo="starts the process again itself; its kill is in the ledger",
    ),
)


# Each fault domain registers its faults in its own small ``faults`` module (no
# heavy imports there), loaded here so the control knows them before any activity
# of the domain has been imported.
DOMAIN_FAULT_MODULES = (
    "chaospika.redis.faults",
    "chaospika.network.faults",
    "chaospika.docker.faults",
    "chaospika.k8s.faults",
)
for _module in DOMAIN_FAULT_MODULES:
    importlib.import_module(_module)
