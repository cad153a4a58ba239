"""Flush the keys of a Redis db (all, or those matching a pattern) and put them back.

The flush saves every key it deletes in a snapshot file beside the fault ledger,
``<ledger dir>/snapshots/<fault id>.snapshot`` (JSON lines, mode 0600): the key,
its DUMP payload (type-preserving: strings, lists, sets, sorted sets, hashes,
streams with their consumer groups, consumers and pending entries) and its PTTL
when it was dumped. The undo, `undo_flush`, RESTOREs each key with REPLACE and
the time to live it had left minus the time spent; a key whose TTL ran out
during the fault stays gone.

How a flush runs, so that no deleted key is missing from the file, whenever the
process dies (SIGKILL included):

1. SCAN the keys matching the pattern in the db of the URL. For each page,
   DUMP and PTTL of its keys in one script (atomic, like MULTI/EXEC), in groups
   of about `GROUP_BYTES` by MEMORY USAGE, written to the file: the pre-images.
   The caps (`max_keys`, `max_bytes`) are checked after each group, before any
   deletion, so memory stays bounded by the cap plus one group.
2. One Lua script per chunk (up to `CHUNK_KEYS` keys, `CHUNK_BYTES` of payload)
   deletes, atomically, the keys of the chunk: a key whose DUMP still equals its
   pre-image (same SHA1, TTL or not alike) is just deleted; a key changed since
   (a hot counter, a stream taking orders) is dumped again and deleted in the
   same script, and that newer image is written next; a key gone meanwhile is
   left alone. So an order placed concurrently is either entirely in the
   snapshot or entirely after the flush, never half in it.
3. The outcome of each chunk is written, and the file fsynced.

A key created after the scan (or re-created by the application during the
fault) is not deleted; on undo, a saved key replaces such a key of the same
name (``replaced_count`` says how many). A key whose pre-image was written but
whose chunk's outcome was not (the flush was killed in between) is restored
only where it is missing: it may never have been deleted.

The undo restores all keys in one script (atomic) when they fit in `CHUNK_KEYS` /
`CHUNK_BYTES` (so a client sees either none or all of them back), else chunk by
chunk; each restored chunk is written to the file, so a retry after a failure
restores only the rest, and a finished restore is never done again (a second
call returns ``already``).
"""

import base64
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets

from chaospika import ledger
from chaospika._secrets import redact_text
from chaospika._validate import require_duration, require_int, require_text
from chaospika.ledger import store, watchdog
from chaospika.redis import _conn

__all__ = [
    "SNAPSHOT_FOLDER",
    "flush",
    "read_snapshot",
    "restore_flushed",
    "undo_flush",
]

logger = logging.getLogger("chaostoolkit")

KIND = "redis.flush"
SNAPSHOT_FOLDER = "snapshots"
FORMAT = "chaospika-redis-snapshot/1"
SCAN_COUNT = 1000
GROUP_KEYS = 1000  # keys per DUMP call
GROUP_BYTES = 16 * 1024 * 1024  # memory (MEMORY USAGE) per DUMP call
CHUNK_KEYS = 5000
CHUNK_BYTES = 32 * 1024 * 1024

# KEYS: a page of keys. Per key: {dump, pttl}, or 0 if it is gone. A script is
# atomic like MULTI/EXEC, and one reply instead of two per key.
DUMP_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local dump = redis.call('DUMP', key)
  if dump then out[i] = {dump, redis.call('PTTL', key)} else out[i] = 0 end
end
return out
"""

# KEYS: a page of keys. Per key: MEMORY USAGE (an estimate; 0 if gone), so that
# the DUMPs of one call stay small and the byte cap is checked between calls.
SIZE_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('MEMORY', 'USAGE', key) or 0
end
return out
"""

# KEYS: keys to restore; ARGV: ttl, "replace"|"missing", payload per key.
# Per key: 1/0 whether it existed before, or "ERR <message>" (BUSYKEY: kept).
RESTORE_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local ttl, how, dump = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local existed = redis.call('EXISTS', key)
  local done
  if how == 'replace' then
    done = redis.pcall('RESTORE', key, ttl, dump, 'REPLACE')
  else
    done = redis.pcall('RESTORE', key, ttl, dump)
  end
  if type(done) == 'table' and done.err then out[i] = 'ERR ' .. done.err
  else out[i] = existed end
end
return out
"""

# KEYS: the chunk's keys; ARGV: "<sha1 of the pre-image>:<t|p>" (TTL or persistent).
# Per key: 1 deleted as pre-imaged, 0 already gone, {dump, pttl} deleted but changed.
DELETE_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local dump = redis.call('DUMP', key)
  if not dump then
    out[i] = 0
  else
    local pttl = redis.call('PTTL', key)
    local tag = redis.sha1hex(dump) .. (pttl >= 0 and ':t' or ':p')
    redis.call('DEL', key)
    if tag == ARGV[i] then out[i] = 1 else out[i] = {dump, pttl} end
  end
end
return out
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _tag(dump: bytes, pttl: int) -> str:
    return hashlib.sha1(dump).hexdigest() + (":t" if pttl >= 0 else ":p")


def snapshot_path(fault_id: str) -> str:
    """Where the snapshot of the flush `fault_id` is kept."""
    folder = os.path.join(store.ledger_dir(), SNAPSHOT_FOLDER)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, f"{fault_id}.snapshot")


class _Writer:
    """Append-only JSON lines, flushed to the kernel after each write (SIGKILL-safe)."""

    def __init__(self, path: str) -> None:
        self.path = path
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.handle = os.fdopen(descriptor, "w", encoding="utf-8")

    def write(self, *items: dict[str, Any]) -> None:
        self.handle.write("".join(json.dumps(item) + "\n" for item in items))
        self.handle.flush()

    def sync(self) -> None:
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


@dataclass
class _Saved:
    """What the flush keeps in memory of a pre-imaged key (the payload is on disk)."""

    seq: int
    key: bytes
    tag: str
    size: int


@dataclass
class _Flush:
    """Counts of one flush."""

    saved: list[_Saved] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)
    payload_bytes: int = 0
    flushed: int = 0
    changed: int = 0
    vanished: int = 0


def _limits(max_keys: Any, max_bytes: Any, force: Any) -> tuple[int | None, int | None]:
    if not isinstance(force, bool):
        raise ActivityFailed(f"argument 'force' must be true or false, got {force!r}")
    keys = require_int("max_keys", max_keys, minimum=1)
    size = require_int("max_bytes", max_bytes, minimum=1)
    return (None, None) if force else (keys, size)


def _pre_image(
    client: redis.Redis,
    pattern: str,
    writer: _Writer,
    state: _Flush,
    max_keys: int | None,
    max_bytes: int | None,
) -> str | None:
    """Dump every key matching `pattern` to the file; return why to refuse, if so."""
    dump_script = client.register_script(DUMP_SCRIPT)
    size_script = client.register_script(SIZE_SCRIPT)
    cursor = 0
    for _ in range(10_000_000):  # SCAN ends at cursor 0; bounded all the same
        cursor, page = client.scan(cursor, match=pattern, count=SCAN_COUNT)
        fresh = [key for key in dict.fromkeys(page) if key not in state.seen]
        sizes = size_script(keys=fresh) if fresh else []
        for keys in _groups(fresh, [int(size) for size in sizes]):
            replies = dump_script(keys=keys)
            now = time.time()
            lines = []
            for key, reply in zip(keys, replies, strict=True):
                state.seen.add(key)
                if not isinstance(reply, list):
                    continue  # gone between SCAN and DUMP: not ours to delete
                dump, pttl = reply[0], int(reply[1])
                seq = len(state.saved)
                state.saved.append(_Saved(seq, key, _tag(dump, pttl), len(dump)))
                state.payload_bytes += len(dump)
                lines.append(
                    {"t": "pre", "seq": seq, "key": _b64(key), "dump": _b64(dump)}
                    | {"pttl": pttl, "at": now}
                )
            writer.write(*lines)
            if max_keys is not None and len(state.saved) > max_keys:
                return (
                    f"more than max_keys={max_keys} keys match {pattern!r}; "
                    "raise max_keys or pass force=true"
                )
            if max_bytes is not None and state.payload_bytes > max_bytes:
                return (
                    f"the keys matching {pattern!r} take more than "
                    f"max_bytes={max_bytes} bytes (DUMP size, {len(state.saved)} "
                    "keys so far); raise max_bytes or pass force=true"
                )
        if int(cursor) == 0:
            return None
    return "SCAN did not finish"


def _groups(keys: list[bytes], sizes: list[int]) -> list[list[bytes]]:
    """`keys` in groups of at most GROUP_KEYS keys and about GROUP_BYTES of memory."""
    groups: list[list[bytes]] = [[]]
    total = 0
    for key, size in zip(keys, sizes, strict=True):
        if groups[-1] and (len(groups[-1]) >= GROUP_KEYS or total + size > GROUP_BYTES):
            groups.append([])
            total = 0
        groups[-1].append(key)
        total += size
    return [group for group in groups if group]


def _chunks(saved: list[_Saved]) -> list[list[_Saved]]:
    chunks: list[list[_Saved]] = [[]]
    size = 0
    for item in saved:
        if chunks[-1] and (len(chunks[-1]) >= CHUNK_KEYS or size >= CHUNK_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += item.size
    return [chunk for chunk in chunks if chunk]


def _delete(client: redis.Redis, writer: _Writer, state: _Flush) -> None:
    """Delete the pre-imaged keys chunk by chunk, writing each chunk's outcome."""
    script = client.register_script(DELETE_SCRIPT)
    for chunk in _chunks(state.saved):
        outcome = script(
            keys=[item.key for item in chunk], args=[item.tag for item in chunk]
        )
        now = time.time()
        deleted, gone, newer = [], [], []
        for item, result in zip(chunk, outcome, strict=True):
            if result == 1:
                deleted.append(item.seq)
            elif result == 0:
                gone.append(item.seq)
                state.payload_bytes -= item.size
            else:
                dump, pttl = result[0], int(result[1])
                newer.append(
                    {"t": "newer", "seq": item.seq, "dump": _b64(dump)}
                    | {"pttl": pttl, "at": now}
                )
                state.payload_bytes += len(dump) - item.size
        writer.write(
            *newer, {"t": "deleted", "seqs": deleted}, {"t": "gone", "seqs": gone}
        )
        state.flushed += len(deleted) + len(newer)
        state.changed += len(newer)
        state.vanished += len(gone)
    writer.sync()


def _flush_into(
    client: redis.Redis,
    fault: ledger.Fault,
    path: str,
    pattern: str,
    db: int,
    key_cap: int | None,
    byte_cap: int | None,
) -> _Flush:
    """Write the snapshot of fault `fault` to `path`, then delete what it holds."""
    life = fault.data.get("ttl_seconds")
    writer = _Writer(path)
    try:
        header = {"t": "header", "format": FORMAT, "fault": fault.id}
        url = fault.data["target"]["url"]
        writer.write(header | {"url": url, "db": db, "pattern": pattern})
        writer.sync()
        _conn.set_undo_args(fault, snapshot=path)
        state = _Flush()
        refused = _pre_image(client, pattern, writer, state, key_cap, byte_cap)
        if refused:
            writer.close()
            os.remove(path)
            _conn.close(fault, "refused: nothing was deleted", refused=refused)
            raise ActivityFailed(f"flush refused, nothing deleted: {refused}")
        writer.sync()
        if life is not None:
            watchdog.arm(fault)
        _delete(client, writer, state)
    finally:
        writer.close()
    return state


def flush(
    redis_url: str,
    pattern: str,
    max_keys: Any,
    max_bytes: Any,
    force: Any,
    ttl: Any,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Snapshot then delete the keys matching `pattern`; see the module docstring."""
    pattern = require_text("pattern", pattern)
    key_cap, byte_cap = _limits(max_keys, max_bytes, force)
    life = None if ttl is None else require_duration("ttl", ttl, allow_equal=False)
    started = time.monotonic()
    target = _conn.describe(redis_url, pattern=pattern)
    undo = {
        "module": __name__,
        "func": "undo_flush",
        "args": {"redis_url": _conn.undo_url(redis_url, secrets), "snapshot": None},
    }
    fault = path = None
    try:
        with _conn.connected(redis_url, secrets=secrets, binary=True) as client:
            client.ping()
            db = _conn.database(client)
            fault = ledger.record(KIND, target, undo, ttl=life)
            path = snapshot_path(fault.id)
            state = _flush_into(client, fault, path, pattern, db, key_cap, byte_cap)
    except ActivityFailed as error:
        if fault is None or not ledger.get(fault.id).open:
            raise
        raise ActivityFailed(
            f"{error}; the keys deleted so far are saved in {path}: "
            "restore_flushed_keys or `chaospika cleanup` puts them back"
        ) from None
    took = round(time.monotonic() - started, 3)
    details = {
        "flushed_count": state.flushed,
        "snapshot": path,
        "snapshot_bytes": state.payload_bytes,
    }
    ledger.applied(fault, **details)
    logger.info(
        "flushed %d keys matching %r from db %d of %s; saved %d bytes in %s",
        state.flushed,
        pattern,
        db,
        target["url"],
        state.payload_bytes,
        path,
    )
    return {
        "fault": fault.id,
        "pattern": pattern,
        "db": db,
        **details,
        "snapshot_file_bytes": os.path.getsize(path),
        "changed_count": state.changed,
        "vanished_count": state.vanished,
        "flush_seconds": took,
        "undo": "restore_flushed_keys (or the ledger): RESTORE ... REPLACE with "
        "the TTL left",
    }


###############################################################################
# Undo
###############################################################################
@dataclass
class _Image:
    key: bytes
    dump: bytes
    pttl: int
    at: float
    replace: bool


def read_snapshot(path: str) -> dict[str, Any]:
    """Parse a snapshot file: header, images to restore, seqs restored, finished.

    A last line cut short (the flush was killed while writing it) is ignored.
    """
    header: dict[str, Any] = {}
    pre: dict[int, dict[str, Any]] = {}
    newer: dict[int, dict[str, Any]] = {}
    deleted: set[int] = set()
    gone: set[int] = set()
    restored: set[int] = set()
    finished = None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            kind = item.get("t")
            if kind == "header":
                header = item
            elif kind == "pre":
                pre[item["seq"]] = item
            elif kind == "newer":
                newer[item["seq"]] = item
            elif kind == "deleted":
                deleted.update(item["seqs"])
            elif kind == "gone":
                gone.update(item["seqs"])
            elif kind == "restored":
                restored.update(item["seqs"])
            elif kind == "finished":
                finished = item
    images: dict[int, _Image] = {}
    for seq, item in pre.items():
        if seq in gone:
            continue
        chosen = newer.get(seq, item)
        images[seq] = _Image(
            key=base64.b64decode(item["key"]),
            dump=base64.b64decode(chosen["dump"]),
            pttl=int(chosen["pttl"]),
            at=float(chosen["at"]),
            # deleted for sure: replace what the application wrote since;
            # outcome unknown: it may never have been deleted, restore if missing
            replace=seq in deleted or seq in newer,
        )
    return {
        "header": header,
        "images": images,
        "restored": restored,
        "finished": finished,
    }


def _restore_chunks(images: list[tuple[int, _Image]]) -> list[list[tuple[int, _Image]]]:
    chunks: list[list[tuple[int, _Image]]] = [[]]
    size = 0
    for pair in images:
        if chunks[-1] and (len(chunks[-1]) >= CHUNK_KEYS or size >= CHUNK_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(pair)
        size += len(pair[1].dump)
    return [chunk for chunk in chunks if chunk]


def undo_flush(redis_url: str, snapshot: str | None) -> dict[str, Any]:
    """Ledger undo of a flush: RESTORE the saved keys with the TTL they have left.

    Safe to call twice: a finished restore is not done again. Raises
    ActivityFailed when a key could not be restored (the keys restored so far
    are noted in the file; a retry restores the rest).
    """
    if snapshot is None:
        return {"restored_count": 0, "reason": "no snapshot: nothing was deleted"}
    if not os.path.exists(snapshot):
        raise ActivityFailed(f"snapshot {snapshot!r} is missing: cannot restore")
    parsed = read_snapshot(snapshot)
    if parsed["finished"] is not None:
        done = {k: v for k, v in parsed["finished"].items() if k.endswith("_count")}
        return {**done, "already": True, "snapshot": snapshot}
    started = time.monotonic()
    todo = [
        (seq, image)
        for seq, image in sorted(parsed["images"].items())
        if seq not in parsed["restored"]
    ]
    counts = {"restored": 0, "expired": 0, "replaced": 0, "kept": 0}
    errors: list[str] = []
    writer = _Writer(snapshot)
    try:
        with _conn.connected(redis_url, binary=True, timeout=30.0) as client:
            for chunk in _restore_chunks(todo):
                done = _restore_chunk(client, chunk, counts, errors)
                writer.write({"t": "restored", "seqs": done})
            if errors:
                raise ActivityFailed(
                    f"{len(errors)} keys not restored from {snapshot}: "
                    f"{'; '.join(errors[:3])}"
                )
        result: dict[str, Any] = {
            f"{name}_count": value for name, value in counts.items()
        }
        result.update(
            snapshot=snapshot, restore_seconds=round(time.monotonic() - started, 3)
        )
        writer.write({"t": "finished", "at": time.time(), **result})
        writer.sync()
    finally:
        writer.close()
    logger.info(
        "restored %d keys from %s (%d expired meanwhile, %d replaced)",
        counts["restored"],
        snapshot,
        counts["expired"],
        counts["replaced"],
    )
    return result


def _restore_chunk(
    client: redis.Redis,
    chunk: list[tuple[int, _Image]],
    counts: dict[str, int],
    errors: list[str],
) -> list[int]:
    """RESTORE one chunk atomically (one script); return the seqs now settled."""
    now = time.time()
    keys: list[bytes] = []
    args: list[Any] = []
    sent: list[tuple[int, _Image]] = []
    settled: list[int] = []
    for seq, image in chunk:
        left = 0
        if image.pttl >= 0:
            left = image.pttl - int((now - image.at) * 1000)
            if left <= 0:
                counts["expired"] += 1
                settled.append(seq)
                continue
        keys.append(image.key)
        args += [left, "replace" if image.replace else "missing", image.dump]
        sent.append((seq, image))
    if not sent:
        return settled
    replies = client.register_script(RESTORE_SCRIPT)(keys=keys, args=args)
    for (seq, image), reply in zip(sent, replies, strict=True):
        if isinstance(reply, bytes):
            message = reply.decode(errors="replace")
            if not image.replace and "BUSYKEY" in message:
                counts["kept"] += 1  # never deleted, or written again: leave it
                settled.append(seq)
                continue
            name = image.key.decode(errors="replace")
            errors.append(f"{name!r}: {redact_text(message)}")
            continue
        counts["restored"] += 1
        counts["replaced"] += int(bool(reply))
        settled.append(seq)
    return settled


def restore_flushed(redis_url: str, secrets: Secrets = None) -> dict[str, Any]:
    """Undo, newest first, this run's flushes of the db of `redis_url` still in force."""
    target = _conn.describe(redis_url)
    run = ledger.current_run_id()
    reports = []
    for fault in reversed(ledger.outstanding(run)):
        where = fault.data.get("target") or {}
        if fault.data["kind"] != KIND:
            continue
        if (where.get("url"), where.get("db")) != (target["url"], target["db"]):
            continue
        report = ledger.undo(fault.id, by="restore_flushed_keys")
        reports.append({"fault": fault.id, **(report.get("result") or {})})
    return {
        "restored_count": sum(r.get("restored_count", 0) for r in reports),
        "expired_count": sum(r.get("expired_count", 0) for r in reports),
        "replaced_count": sum(r.get("replaced_count", 0) for r in reports),
        "faults": reports,
    }
