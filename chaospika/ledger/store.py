"""Where ledger records live: one JSON file per fault, written atomically, locked.

The folder is ``$CHAOSPIKA_LEDGER_DIR``, else ``~/.chaospika/ledger`` (mode 0700,
files 0600). A record survives the process that wrote it, SIGKILL included.
"""

import contextlib
import fcntl
import glob
import json
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["ledger_dir", "load", "load_all", "locked", "remove", "save"]


def ledger_dir() -> str:
    """The ledger folder (created on first use)."""
    folder = os.environ.get("CHAOSPIKA_LEDGER_DIR") or "~/.chaospika/ledger"
    folder = os.path.abspath(os.path.expanduser(folder))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


def _path(fault_id: str) -> str:
    if not fault_id or not all(c.isalnum() or c in "-_" for c in fault_id):
        raise ValueError(f"not a fault id: {fault_id!r}")
    return os.path.join(ledger_dir(), f"{fault_id}.json")


def save(data: dict[str, Any]) -> None:
    """Write the record atomically (temporary file, fsync, rename)."""
    path = _path(data["id"])
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load(fault_id: str) -> dict[str, Any] | None:
    """The record `fault_id`, or None if there is none (or it is unreadable)."""
    try:
        with open(_path(fault_id)) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_all() -> list[dict[str, Any]]:
    """Every readable record, oldest first."""
    records = []
    for name in os.listdir(ledger_dir()):
        if name.endswith(".json"):
            data = load(name[: -len(".json")])
            if data is not None:
                records.append(data)
    return sorted(records, key=lambda data: data.get("created_at", 0))


@contextlib.contextmanager
def locked(fault_id: str) -> Iterator[None]:
    """Hold an exclusive lock on the record while it is read, undone and written."""
    lock_path = _path(fault_id)[: -len(".json")] + ".lock"
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def remove(fault_id: str) -> int:
    """Delete the record `fault_id` and every file the ledger keeps for it.

    That is ``<id>.json``, its lock, and files named ``<id>.*`` in the ledger's
    sub-folders (a Redis snapshot, say). Returns how many files were deleted.
    """
    record = _path(fault_id)
    folder = os.path.dirname(record)
    pattern = glob.escape(fault_id)
    paths = [record, record[: -len(".json")] + ".lock"]
    paths += glob.glob(os.path.join(folder, "*", f"{pattern}.*"))
    deleted = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            deleted += 1
    return deleted
