"""Fault records: what was done, where, how to undo it, by which run, until when."""

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from chaospika.ledger import store

__all__ = [
    "Fault",
    "applied",
    "current_run_id",
    "get",
    "outstanding",
    "owner_alive",
    "process_start",
    "prune",
    "record",
    "resolve",
    "set_run_id",
]

RUN_ID_VARIABLE = "CHAOSPIKA_RUN_ID"
OPEN_STATES = ("recorded", "applied", "failed")


@dataclass
class Fault:
    """A ledger record as read back; `data` is the JSON stored."""

    data: dict[str, Any]

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def state(self) -> str:
        return self.data["state"]

    @property
    def open(self) -> bool:
        """Not undone yet: the fault may still be in force."""
        return self.data["state"] in OPEN_STATES


def set_run_id(run_id: str) -> str:
    """Name the current run (children started from here inherit it)."""
    os.environ[RUN_ID_VARIABLE] = run_id
    return run_id


def current_run_id() -> str:
    """The current run's id: set by the safety control, else one per process."""
    return os.environ.get(RUN_ID_VARIABLE) or set_run_id(f"run-{uuid.uuid4().hex[:12]}")


def process_start(pid: int) -> int | None:
    """Start time of `pid` in clock ticks (tells a pid apart from its reuse)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def record(
    kind: str,
    target: dict[str, Any],
    undo: dict[str, Any] | None,
    ttl: float | None = None,
) -> Fault:
    """Write the record of a fault about to be applied; return it.

    `undo` is {"module", "func", "args"} (a function of chaospika that undoes the
    fault, safe to call twice) or None when the fault cannot be undone.
    """
    now = time.time()
    owner = os.getpid()
    data = {
        "id": f"{kind.replace('.', '-')}-{uuid.uuid4().hex[:12]}",
        "run_id": current_run_id(),
        "kind": kind,
        "target": target,
        "undo": undo,
        "state": "recorded",
        "created_at": now,
        "ttl_seconds": ttl,
        "expires_at": None if ttl is None else now + ttl,
        "owner": {"pid": owner, "start": process_start(owner)},
        "error": None,
    }
    store.save(data)
    return Fault(data)


def _update(fault_id: str, **changes: Any) -> Fault | None:
    with store.locked(fault_id):
        data = store.load(fault_id)
        if data is None:
            return None
        data.update(changes)
        store.save(data)
    return Fault(data)


def applied(fault: Fault, **details: Any) -> Fault:
    """Mark `fault` applied (it is now in force), with what applying it found."""
    return (
        _update(fault.id, state="applied", applied_at=time.time(), **details) or fault
    )


def get(fault_id: str) -> Fault | None:
    """The record `fault_id`, or None."""
    data = store.load(fault_id)
    return None if data is None else Fault(data)


def outstanding(run_id: str | None = None) -> list[Fault]:
    """Records not undone yet (of `run_id` only, if given), oldest first."""
    faults = [Fault(data) for data in store.load_all()]
    return [
        fault
        for fault in faults
        if fault.open and (run_id is None or fault.data.get("run_id") == run_id)
    ]


def resolve(kind: str, match: dict[str, Any], how: str) -> list[str]:
    """Mark undone the open records of `kind` whose target has `match` (undone by `how`)."""
    done = []
    for fault in outstanding():
        target = fault.data.get("target") or {}
        if fault.data["kind"] != kind:
            continue
        if not all(target.get(key) == value for key, value in match.items()):
            continue
        if _update(fault.id, state="undone", undone_at=time.time(), undone_by=how):
            done.append(fault.id)
    return done


def prune(older_than: float, now: float | None = None) -> list[str]:
    """Delete the records undone more than `older_than` seconds ago; return their ids.

    Open records are never deleted, whatever their age: `chaospika cleanup` still
    has to undo them.
    """
    limit = (time.time() if now is None else now) - older_than
    pruned = []
    for data in store.load_all():
        undone_at = data.get("undone_at")
        if data.get("state") != "undone" or not isinstance(undone_at, (int, float)):
            continue
        if undone_at <= limit:
            with store.locked(data["id"]):
                store.remove(data["id"])
            pruned.append(data["id"])
    return pruned


def owner_alive(fault: Fault) -> bool:
    """True while the process that applied `fault` runs (same pid, same start)."""
    owner = fault.data.get("owner") or {}
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    start = process_start(pid)
    return start is not None and start == owner.get("start")
