"""Pause the clients of a Redis server (CLIENT PAUSE): a fault that ends by itself.

* mode ``write``: commands that write (and PUBLISH, EVAL, ...) wait; reads go on.
  The undo, CLIENT UNPAUSE, ends it early.
* mode ``all``: every command waits, CLIENT UNPAUSE included (checked on Redis
  7.0), so a pause ALL cannot be ended early: its undo is its expiry. The undo
  waits until then and checks that the server answers again; an experiment
  interrupted during a pause ALL ends only when the pause does.

The pause is server-wide (every db). Redis 7.0 does not say whether a pause is in
force; the probe `pause_in_force` finds out from a PING and a PUBLISH that wait.
"""

import logging
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets

from chaospika import ledger
from chaospika._secrets import redact_text
from chaospika._validate import require_choice, require_duration
from chaospika.ledger import watchdog
from chaospika.redis import _conn

__all__ = ["MAX_PAUSE_SECONDS", "MODES", "pause", "undo_pause", "unpause"]

logger = logging.getLogger("chaostoolkit")

KIND = "redis.pause"
MODES = ("all", "write")
MAX_PAUSE_SECONDS = 600.0
# After the expiry of a pause ALL, how long the undo waits for the server to answer.
ANSWER_AFTER_EXPIRY_SECONDS = 5.0


def _mode(mode: Any) -> str:
    return require_choice(
        "mode", mode.lower() if isinstance(mode, str) else mode, MODES
    )


def pause(
    redis_url: str, duration: Any, mode: Any, ttl: Any, secrets: Secrets = None
) -> dict[str, Any]:
    """CLIENT PAUSE for `duration` (at most MAX_PAUSE_SECONDS), recorded first."""
    chosen = _mode(mode)
    seconds = require_duration(
        "duration", duration, allow_equal=False, maximum=MAX_PAUSE_SECONDS
    )
    life = None
    if ttl is not None:
        if chosen == "all":
            raise ActivityFailed(
                "argument 'ttl': a pause of mode 'all' cannot be ended early "
                "(CLIENT UNPAUSE waits behind it); it ends by itself after 'duration'"
            )
        life = require_duration("ttl", ttl, allow_equal=False)
    millis = max(1, round(seconds * 1000))
    with _conn.connected(redis_url, secrets=secrets, timeout=5.0) as client:
        client.ping()
        until = time.time() + millis / 1000.0
        undo = {
            "module": __name__,
            "func": "undo_pause",
            "args": {
                "redis_url": _conn.undo_url(redis_url, secrets),
                "mode": chosen,
                "until": until,
            },
        }
        fault = ledger.record(KIND, _conn.describe(redis_url, mode=chosen), undo, life)
        if life is not None and life < seconds:
            watchdog.arm(fault)
        client.client_pause(millis, all=chosen == "all")
    ledger.applied(fault, until=until)
    logger.info(
        "paused the %s clients of %s for %g s",
        "writing" if chosen == "write" else "",
        fault.data["target"]["url"],
        millis / 1000.0,
    )
    early = "CLIENT UNPAUSE (unpause_clients, or the ledger) ends it early"
    return {
        "fault": fault.id,
        "mode": chosen,
        "duration_seconds": millis / 1000.0,
        "until": until,
        "can_end_early": chosen == "write",
        "undo": early
        if chosen == "write"
        else "none before its expiry: a pause ALL holds CLIENT UNPAUSE too; "
        "it ends by itself at 'until'",
    }


def undo_pause(redis_url: str, mode: str, until: float) -> dict[str, Any]:
    """Ledger undo of a pause; safe to call twice.

    ``write``: CLIENT UNPAUSE unless the pause has expired. ``all``: wait for its
    expiry, then check that the server answers PING.
    """
    remaining = float(until) - time.time()
    if remaining > MAX_PAUSE_SECONDS + 1:
        raise ActivityFailed(
            f"pause record ends in {remaining:g} s: not a pause of ours"
        )
    if mode == "write":
        if remaining <= 0:
            return {"unpaused": False, "reason": "the pause had expired"}
        with _conn.connected(redis_url, timeout=5.0) as client:
            client.client_unpause()
        return {"unpaused": True, "ended_early_seconds": round(remaining, 3)}
    if remaining > 0:
        time.sleep(remaining)
    deadline = time.monotonic() + ANSWER_AFTER_EXPIRY_SECONDS
    problem = ""
    for _ in range(int(ANSWER_AFTER_EXPIRY_SECONDS / 0.1) + 2):
        client = _conn.open_client(redis_url, timeout=1.0)
        try:
            client.ping()
            return {
                "unpaused": True,
                "by": "expiry",
                "waited_seconds": max(0, remaining),
            }
        except _conn.UNREACHABLE as error:
            if "refused" in str(error).lower():
                return {"unpaused": True, "by": "expiry", "reason": "server stopped"}
            problem = redact_text(error)
        finally:
            client.close()
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise ActivityFailed(
        f"Redis does not answer {ANSWER_AFTER_EXPIRY_SECONDS:g} s after its pause "
        f"ALL expired (another pause, or a busy server?): {problem}"
    )


def unpause(redis_url: str, secrets: Secrets = None) -> dict[str, Any]:
    """CLIENT UNPAUSE, unless a recorded pause ALL is in force (it would wait for it)."""
    target = _conn.describe(redis_url)
    now = time.time()
    in_force = [
        fault
        for fault in ledger.outstanding()
        if fault.data["kind"] == KIND
        and (fault.data.get("target") or {}).get("url") == target["url"]
        and (fault.data.get("undo") or {}).get("args", {}).get("mode") == "all"
        and fault.data["undo"]["args"].get("until", 0) > now
    ]
    if in_force:
        until = max(fault.data["undo"]["args"]["until"] for fault in in_force)
        return {
            "unpaused": False,
            "pause_all_until": until,
            "reason": f"a pause ALL is in force for {until - now:.3f} s more and "
            "cannot be ended early",
        }
    with _conn.connected(redis_url, secrets=secrets, timeout=5.0) as client:
        client.client_unpause()
    resolved = ledger.resolve(KIND, {"url": target["url"]}, "unpause_clients")
    return {"unpaused": True, "faults": resolved}
