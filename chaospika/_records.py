"""Named results kept during one `chaos run`, so later probes can read them.

A background action (a load, a fault) stores what it saw under a name; a probe
of the hypothesis reads it back by that name. Records live in this process and
are also written as JSON under ``CHAOSPIKA_RECORDS_DIR`` when that is set.
"""

import json
import os
import threading
from typing import Any

__all__ = ["clear", "get", "put", "update"]

_lock = threading.Lock()
_records: dict[str, dict[str, Any]] = {}


def _file_for(kind: str, name: str) -> str | None:
    folder = os.environ.get("CHAOSPIKA_RECORDS_DIR")
    if not folder:
        return None
    os.makedirs(folder, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return os.path.join(folder, f"{kind}-{safe}.json")


def put(kind: str, name: str, record: dict[str, Any]) -> None:
    """Store `record` as the latest of `kind` under `name`."""
    with _lock:
        _records[f"{kind}:{name}"] = record
        path = _file_for(kind, name)
        if path:
            with open(path + ".tmp", "w") as handle:
                json.dump(record, handle, default=str)
            os.replace(path + ".tmp", path)


def update(kind: str, name: str, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into the record of `kind` under `name` and return it."""
    with _lock:
        record = dict(_records.get(f"{kind}:{name}", {}))
    record.update(fields)
    put(kind, name, record)
    return record


def get(kind: str, name: str) -> dict[str, Any] | None:
    """Return the latest record of `kind` under `name`, or None if there is none."""
    with _lock:
        record = _records.get(f"{kind}:{name}")
    if record is not None:
        return record
    path = _file_for(kind, name)
    if path and os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    return None


def clear() -> None:
    """Forget every in-process record (tests use this between runs)."""
    with _lock:
        _records.clear()
