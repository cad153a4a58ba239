"""A slow Redis: DEBUG SLEEP in a loop, run by a detached process with its own deadline.

The loop is ``python -m chaospika.redis._slow`` in its own session; it reads its
settings (the URL may hold a password) from its stdin, then sends ``DEBUG SLEEP
<sleep>`` and waits `interval`, again and again, for `duration` from its start
(it tells the process that started it its deadline, and only then does the fault
return), and it stops at that deadline by itself, even if the process that
started it was SIGKILLed. The undo, `undo_slow`, stops it earlier (SIGTERM); a DEBUG
SLEEP already running ends by itself within `sleep_ms`.

Redis 7 refuses DEBUG unless the server runs with ``--enable-debug-command
local`` (or ``yes``); the fault then fails naming that flag, before anything is
recorded or started.
"""

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets

from chaospika import ledger
from chaospika._secrets import redact_text
from chaospika._validate import require_duration, require_number
from chaospika.ledger import store
from chaospika.ledger.records import process_start
from chaospika.process import _pidfile
from chaospika.redis import _conn

__all__ = ["MAX_SLEEP_MS", "main", "slow", "stop_all", "undo_slow"]

logger = logging.getLogger("chaostoolkit")

KIND = "redis.slow"
MAX_SECONDS = 3600.0
MAX_SLEEP_MS = 10_000.0
DEBUG_FLAG = "--enable-debug-command"
START_TIMEOUT_SECONDS = 20.0
# Loops started by this process, kept so that they are reaped once they end.
_children: dict[int, subprocess.Popen] = {}


def _check_debug(client: redis.Redis) -> None:
    """Fail, naming the server flag, unless the server runs DEBUG SLEEP."""
    try:
        client.execute_command("DEBUG", "SLEEP", "0")
    except redis.exceptions.ResponseError as error:
        raise ActivityFailed(
            f"Redis at {_conn.where(client)} refuses DEBUG ({redact_text(error)}): "
            f"a slow Redis needs the server started with `{DEBUG_FLAG} local` "
            f"(or `{DEBUG_FLAG} yes`, or `enable-debug-command local` in its "
            "configuration file; Redis >= 7 disables DEBUG by default)"
        ) from None


def _log_path(fault_id: str) -> str:
    folder = os.path.join(store.ledger_dir(), "logs")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, f"{fault_id}.slow.log")


def slow(
    redis_url: str,
    duration: Any,
    sleep_ms: Any,
    interval: Any,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Start the DEBUG SLEEP loop for `duration`, recorded first."""
    seconds = require_duration(
        "duration", duration, allow_equal=False, maximum=MAX_SECONDS
    )
    nap = require_number("sleep_ms", sleep_ms, 0, False, MAX_SLEEP_MS) / 1000.0
    gap = require_duration("interval", interval, maximum=60)
    with _conn.connected(redis_url, secrets=secrets, timeout=5.0) as client:
        _check_debug(client)
    until = time.time() + seconds + START_TIMEOUT_SECONDS  # at the latest
    undo = {
        "module": __name__,
        "func": "undo_slow",
        "args": {"pid": None, "start": None, "until": until},
    }
    where = _conn.describe(redis_url, sleep_ms=nap * 1000, interval_seconds=gap)
    fault = ledger.record(KIND, where, undo, ttl=None)
    settings = {
        "redis_url": _conn.undo_url(redis_url, secrets),
        "duration_seconds": seconds,
        "latest_start": time.time() + START_TIMEOUT_SECONDS,
        "sleep_seconds": nap,
        "interval_seconds": gap,
    }
    log = _log_path(fault.id)
    with open(log, "ab") as output:
        child = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=output,
            start_new_session=True,
            close_fds=True,
        )
    _children[child.pid] = child
    _conn.set_undo_args(fault, pid=child.pid, start=process_start(child.pid))
    child.stdin.write(json.dumps(settings).encode())
    child.stdin.close()
    started = _started(child)
    if started is None:
        undo_slow(child.pid, process_start(child.pid), until)
        _conn.close(fault, "the loop did not start")
        tail = redact_text(_pidfile.log_tail(log) or "(no log output)")
        raise ActivityFailed(
            f"the DEBUG SLEEP loop did not start; {log} ends with:\n{tail}"
        )
    until = started
    _conn.set_undo_args(fault, until=until)
    ledger.applied(fault, pid=child.pid, until=until)
    logger.info(
        "slowing Redis %s down: DEBUG SLEEP %g ms every %g s for %g s (pid %d)",
        where["url"],
        nap * 1000,
        nap + gap,
        seconds,
        child.pid,
    )
    return {
        "fault": fault.id,
        "pid": child.pid,
        "duration_seconds": seconds,
        "sleep_ms": nap * 1000,
        "interval_seconds": gap,
        "until": until,
        "log": log,
        "undo": "stop_slow_redis (or the ledger) stops the loop; it also stops "
        "by itself at 'until'",
    }


def _started(child: subprocess.Popen) -> float | None:
    """Wait for the loop's "started <until>" line, sent before its first DEBUG SLEEP.

    Returns its deadline (epoch seconds), None if it did not start.
    """
    try:
        ready, _, _ = select.select([child.stdout], [], [], START_TIMEOUT_SECONDS)
        words = (child.stdout.readline() if ready else b"").split()
    finally:
        child.stdout.close()
    if len(words) != 2 or words[0] != b"started":
        return None
    return float(words[1])


def _gone(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return True
    return _pidfile.proc_state(pid) in (None, "Z", "X")


def undo_slow(pid: int | None, start: int | None, until: float) -> dict[str, Any]:
    """Ledger undo: stop the loop `pid` (if it is still that process); safe twice."""
    if pid is None:
        return {
            "stopped": False,
            "reason": "no loop was started; a loop stops by itself at its deadline",
        }
    if start is None or process_start(pid) != start or _gone(pid):
        _gone(pid)
        return {"stopped": False, "reason": "the loop had ended"}
    os.kill(pid, signal.SIGTERM)
    for _ in range(250):
        if _gone(pid):
            return {
                "stopped": True,
                "pid": pid,
                "left_seconds": max(0.0, until - time.time()),
            }
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    for _ in range(250):
        if _gone(pid):
            return {"stopped": True, "pid": pid, "killed": True}
        time.sleep(0.02)
    raise ActivityFailed(f"the DEBUG SLEEP loop {pid} survived SIGKILL")


def stop_all(redis_url: str) -> dict[str, Any]:
    """Undo, through the ledger, every slow-Redis fault of `redis_url` in force."""
    url = _conn.describe(redis_url)["url"]
    faults = [
        fault.id
        for fault in ledger.outstanding()
        if fault.data["kind"] == KIND
        and (fault.data.get("target") or {}).get("url") == url
    ]
    reports = [ledger.undo(fault_id, by="stop_slow_redis") for fault_id in faults]
    stopped = sum(bool((r.get("result") or {}).get("stopped")) for r in reports)
    return {"stopped_count": stopped, "faults": faults}


def _announce_start(until: float) -> None:
    """Tell the waiting process the loop runs (once; stdout is closed after it)."""
    if not sys.stdout.closed:
        sys.stdout.write(f"started {until!r}\n")
        sys.stdout.close()


def _first_stall(client: redis.Redis, seconds: float, until: float) -> None:
    """DEBUG SLEEP `seconds`: sent, then the start announced, then its reply awaited."""
    pool = client.connection_pool
    try:
        connection = pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants a command name
        connection = pool.get_connection("DEBUG")
    try:
        connection.send_command("DEBUG", "SLEEP", f"{seconds:.3f}")
        _announce_start(until)
        connection.read_response()
    finally:
        pool.release(connection)


def loop(redis_url: str, duration: float, sleep_seconds: float, interval: float) -> int:
    """DEBUG SLEEP, wait `interval`, again, for `duration` seconds from now."""
    client = _conn.open_client(redis_url, timeout=sleep_seconds + 5.0)
    until = time.time() + duration
    try:  # the first stall is sent before saying "started": in force on return
        _first_stall(client, min(sleep_seconds, duration), until)
        sleeps = 1
    except _conn.UNREACHABLE as error:  # the loop below tries again
        logger.warning("DEBUG SLEEP failed: %s", redact_text(error))
        sleeps = 0
    except redis.exceptions.ResponseError as error:
        logger.error("DEBUG SLEEP refused: %s", redact_text(error))
        return 2
    finally:
        _announce_start(until)
    if sleeps:
        time.sleep(min(interval, max(0.0, until - time.time())))
    step = max(sleep_seconds + interval, 0.05)
    for _ in range(int(max(0.0, until - time.time()) / step) * 2 + 100):
        left = until - time.time()
        if left <= 0.001:
            break
        try:
            client.execute_command("DEBUG", "SLEEP", f"{min(sleep_seconds, left):.3f}")
            sleeps += 1
        except _conn.UNREACHABLE as error:  # restarting, say: try again shortly
            logger.warning("DEBUG SLEEP failed: %s", redact_text(error))
            time.sleep(min(0.1, max(0.0, until - time.time())))
            continue
        except redis.exceptions.ResponseError as error:
            logger.error("DEBUG SLEEP refused: %s", redact_text(error))
            return 2
        time.sleep(min(interval, max(0.0, until - time.time())))
    logger.info("slow Redis loop done: %d DEBUG SLEEPs", sleeps)
    return 0


def main() -> int:
    """`python -m chaospika.redis._slow` with its settings as JSON on stdin."""
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    settings = json.loads(sys.stdin.read())
    if time.time() > float(settings["latest_start"]):
        logger.error("started too late: not slowing Redis down")
        return 3
    return loop(
        settings["redis_url"],
        float(settings["duration_seconds"]),
        float(settings["sleep_seconds"]),
        float(settings["interval_seconds"]),
    )


if __name__ == "__main__":
    sys.exit(main())
