"""Undo a recorded fault: idempotent, and raising when it really failed."""

import importlib
import logging
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaospika.ledger import store
from chaospika.ledger.records import Fault, outstanding

__all__ = ["undo", "undo_outstanding"]

logger = logging.getLogger("chaostoolkit")


def _undo_function(spec: dict[str, Any]) -> Any:
    module = str(spec.get("module", ""))
    if not module.startswith("chaospika."):
        raise ActivityFailed(f"ledger: refusing an undo outside chaospika: {module!r}")
    return getattr(importlib.import_module(module), str(spec["func"]))


def undo(fault_id: str, by: str = "undo") -> dict[str, Any]:
    """Undo the fault `fault_id` unless already undone; return what the undo did.

    Raises ActivityFailed if the undo failed (the record stays outstanding, with
    the error) or the fault cannot be undone.
    """
    with store.locked(fault_id):
        data = store.load(fault_id)
        if data is None:
            raise ActivityFailed(f"ledger: no fault {fault_id!r}")
        if data["state"] == "undone":
            return {"fault": fault_id, "undone": True, "already": True}
        spec = data.get("undo")
        if not spec:
            raise ActivityFailed(
                f"ledger: fault {fault_id} ({data['kind']}) cannot be undone: "
                f"{data.get('irreversible') or 'no undo was recorded'}"
            )
        try:
            result = _undo_function(spec)(**(spec.get("args") or {}))
        except Exception as error:  # the undo's own failure, kept on the record
            data.update(state="failed", error=f"{type(error).__name__}: {error}")
            store.save(data)
            raise ActivityFailed(
                f"ledger: undo of {fault_id} ({data['kind']}) failed: {error}"
            ) from error
        data.update(state="undone", undone_at=time.time(), undone_by=by, error=None)
        store.save(data)
    logger.info("ledger: undid %s (%s) by %s", fault_id, data["kind"], by)
    return {"fault": fault_id, "undone": True, "already": False, "result": result}


def undo_outstanding(
    run_id: str | None = None, by: str = "cleanup", dry_run: bool = False
) -> list[dict[str, Any]]:
    """Undo every outstanding fault (of `run_id`), newest first; report each.

    Never stops at a failure: each report has "error" when its undo failed.
    """
    reports = []
    for fault in reversed(outstanding(run_id)):
        report = _describe(fault)
        if dry_run:
            report["would_undo"] = bool(fault.data.get("undo"))
        else:
            try:
                report.update(undo(fault.id, by=by))
            except ActivityFailed as error:
                report.update(undone=False, error=str(error))
        reports.append(report)
    return reports


def _describe(fault: Fault) -> dict[str, Any]:
    data = fault.data
    return {
        "fault": fault.id,
        "run_id": data.get("run_id"),
        "kind": data["kind"],
        "target": data.get("target"),
        "state": data["state"],
        "undo": (data.get("undo") or {}).get("func"),
    }
