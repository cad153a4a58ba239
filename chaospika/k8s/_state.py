"""What the k8s activities of this Chaos Toolkit process measured, for the ones after.

`kill_pods` records its kill (when, which pods, their owner); `wait_for_recovery`
its measure; `downtime` its samples. `pod_kill_outcome` reads them. Kept in
memory only: the secrets a kill was made with stay here (for the ledger undo
run by the safety control in this process), never on disk.
"""

import threading
from dataclasses import dataclass, field
from typing import Any

from chaoslib.types import Secrets

__all__ = [
    "Kill",
    "downtime",
    "kill_by_id",
    "last_kill",
    "record_downtime",
    "record_kill",
    "record_recovery",
    "reset",
]

_lock = threading.Lock()
_kills: list["Kill"] = []
_downtimes: dict[str, dict[str, Any]] = {}


@dataclass
class Kill:
    """One `kill_pods` call: its pods, their owner, when (wall and monotonic)."""

    kill_id: str
    namespace: str
    selector: str
    owner: Any  # _workloads.Owner
    pods: list[dict[str, Any]]
    killed_at: float
    killed_monotonic: float
    secrets: Secrets = None
    recovery: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def uids(self) -> set[str]:
        return {pod["uid"] for pod in self.pods}


def record_kill(kill: Kill) -> None:
    with _lock:
        _kills.append(kill)


def last_kill(namespace: str, selector: str) -> Kill | None:
    """The latest kill of this process by `selector` in `namespace`."""
    with _lock:
        for kill in reversed(_kills):
            if kill.namespace == namespace and kill.selector == selector:
                return kill
    return None


def kill_by_id(kill_id: str) -> Kill | None:
    with _lock:
        return next((kill for kill in _kills if kill.kill_id == kill_id), None)


def record_recovery(kill: Kill, result: dict[str, Any]) -> None:
    with _lock:
        kill.recovery = dict(result)


def record_downtime(name: str, result: dict[str, Any]) -> None:
    with _lock:
        _downtimes[name] = dict(result)


def downtime(name: str) -> dict[str, Any] | None:
    with _lock:
        found = _downtimes.get(name)
        return None if found is None else dict(found)


def reset() -> None:
    """Forget everything (tests)."""
    with _lock:
        _kills.clear()
        _downtimes.clear()
