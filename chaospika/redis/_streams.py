"""Backlog of a consumer group on a Redis stream, shared by the redis activities.

* pending: entries delivered to the group's consumers but not acknowledged yet
  (XINFO GROUPS ``pending``).
* lag: entries the group has not been delivered yet. Redis >= 7 reports it as
  XINFO GROUPS ``lag``; when the server does not (older servers, or ``lag`` is nil
  after XDEL/XTRIM or XGROUP SETID), the entries after ``last-delivered-id`` are
  counted with XRANGE, in pages.
* backlog = lag + pending: the work the consumers still owe.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets

from chaospika._clients import redis_client
from chaospika._secrets import redact_text, redact_url
from chaospika._validate import require_duration, require_int, require_text

__all__ = [
    "backlog",
    "busy_consumers",
    "connected",
    "consumer_group",
    "drain",
    "outstanding",
    "require_stream",
    "wait_drained",
]

PAGE = 1000
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _where(client: redis.Redis) -> str:
    options = client.connection_pool.connection_kwargs
    where = options.get("path") or f"{options.get('host')}:{options.get('port')}"
    return redact_url(where)


@contextmanager
def connected(redis_url: str, secrets: Secrets = None) -> Iterator[redis.Redis]:
    """Yield a client of `redis_url`; Redis errors become ActivityFailed.

    A URL without a password uses the secret ``redis_password`` of `secrets`.
    """
    client = redis_client(redis_url, secrets=secrets)
    try:
        yield client
    except UNREACHABLE as error:
        raise ActivityFailed(
            f"cannot reach Redis at {_where(client)}: {redact_text(error)}"
        )
    except redis.exceptions.RedisError as error:
        raise ActivityFailed(
            f"Redis at {_where(client)} answered: {redact_text(error)}"
        )
    finally:
        client.close()


def require_stream(client: redis.Redis, stream: Any) -> str:
    """Return `stream` if it names an existing stream key."""
    name = require_text("stream", stream)
    kind = client.type(name)
    if kind == "none":
        raise ActivityFailed(f"argument 'stream': there is no key {name!r}")
    if kind != "stream":
        raise ActivityFailed(
            f"argument 'stream': key {name!r} is a {kind}, not a stream"
        )
    return name


def consumer_group(client: redis.Redis, stream: Any, group: Any) -> dict[str, Any]:
    """Return the XINFO GROUPS entry of `group` on `stream`."""
    name = require_stream(client, stream)
    wanted = require_text("group", group)
    groups = client.xinfo_groups(name)
    for info in groups:
        if info["name"] == wanted:
            return info
    known = ", ".join(repr(info["name"]) for info in groups) or "none"
    raise ActivityFailed(
        f"argument 'group': stream {name!r} has no consumer group {wanted!r} "
        f"(groups: {known})"
    )


def _next_id(entry_id: str) -> str:
    """Return the smallest stream id greater than `entry_id`."""
    millis, _, sequence = entry_id.partition("-")
    if int(sequence or 0) >= 2**64 - 1:
        return f"{int(millis) + 1}-0"
    return f"{millis}-{int(sequence or 0) + 1}"


def _count_after(client: redis.Redis, stream: str, last_id: str) -> int:
    """Count the entries of `stream` after `last_id` with paged XRANGE."""
    count, start = 0, _next_id(last_id)
    for _ in range(client.xlen(stream) // PAGE + 2):
        page = client.xrange(stream, min=start, max="+", count=PAGE)
        count += len(page)
        if len(page) < PAGE:
            break
        start = _next_id(page[-1][0])
    return count


def backlog(client: redis.Redis, stream: Any, group: Any) -> dict[str, int]:
    """Return lag, pending, backlog (lag + pending) and length of the stream."""
    info = consumer_group(client, stream, group)
    name = stream.strip()
    lag = info.get("lag")
    if lag is None:
        lag = _count_after(client, name, info["last-delivered-id"])
    pending = int(info["pending"])
    return {
        "lag": int(lag),
        "pending": pending,
        "backlog": int(lag) + pending,
        "length": int(client.xlen(name)),
    }


def wait_drained(
    redis_url: str,
    stream: str,
    group: str,
    timeout: Any,
    interval: Any,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Wait until the group has no lag and nothing pending, at most `timeout`.

    Never raises for a backlog that stays: returns ``drained`` (bool),
    ``drain_seconds``, ``backlog_at_start`` and the last ``lag``, ``pending`` and
    ``backlog`` seen. Losing the connection meanwhile (Redis restarting) is retried
    until `timeout`; a server unreachable at the start raises ActivityFailed.
    """
    limit = require_duration("timeout", timeout, maximum=86400)
    pause = require_duration("interval", interval, allow_equal=False, maximum=3600)
    started = time.monotonic()
    with connected(redis_url, secrets=secrets) as client:
        facts: dict[str, int] | None = backlog(client, stream, group)
        at_start, last, problem = facts["backlog"], facts, ""
        for _ in range(int(limit / pause) + 2):
            remaining = started + limit - time.monotonic()
            if (facts and facts["backlog"] == 0) or remaining <= 0:
                break
            time.sleep(min(pause, remaining))
            try:
                facts, problem = backlog(client, stream, group), ""
                last = facts
            except UNREACHABLE as error:
                facts, problem = None, f"Redis unreachable: {redact_text(error)}"
    drained = bool(facts) and facts["backlog"] == 0
    result = {
        "drained": drained,
        "drain_seconds": round(time.monotonic() - started, 3),
        "backlog_at_start": at_start,
        "lag": last["lag"],
        "pending": last["pending"],
        "backlog": last["backlog"],
    }
    if problem:
        result["error"] = problem
    return result


def drain(
    redis_url: str,
    stream: str,
    group: str,
    timeout: Any,
    interval: Any,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Like `wait_drained`, but a backlog left after `timeout` raises ActivityFailed."""
    result = wait_drained(redis_url, stream, group, timeout, interval, secrets)
    if result["drained"]:
        return result
    problem = f"; {result['error']}" if "error" in result else ""
    raise ActivityFailed(
        f"stream {stream!r} group {group!r} not drained within "
        f"{result['drain_seconds']:g} s: backlog left lag={result['lag']} "
        f"pending={result['pending']} (backlog at start "
        f"{result['backlog_at_start']}){problem}"
    )


def outstanding(
    client: redis.Redis, stream: str, group: str, field: str, limit: int = 100_000
) -> list[dict[str, str]]:
    """Entries the group still owes: pending (delivered, not acknowledged) or undelivered.

    Each is {"entry_id", "state": "pending"|"undelivered", "id": value of `field`}
    (``id`` is None when the entry lacks the field or was deleted); at most `limit`.
    """
    info = consumer_group(client, stream, group)
    last = info["last-delivered-id"]
    pending: set[str] = set()
    start = "-"
    while len(pending) < limit:
        page = client.xpending_range(stream, group, min=start, max="+", count=PAGE)
        pending.update(str(item["message_id"]) for item in page)
        if len(page) < PAGE:
            break
        start = _next_id(str(page[-1]["message_id"]))
    found: list[dict[str, str]] = []
    start = min(pending, key=_id_key) if pending else _next_id(last)
    while len(found) < limit:
        page = client.xrange(stream, min=start, max="+", count=PAGE)
        for entry_id, fields in page:
            if entry_id in pending or _id_key(entry_id) > _id_key(last):
                state = "pending" if entry_id in pending else "undelivered"
                value = (fields or {}).get(field)
                found.append({"entry_id": entry_id, "state": state, "id": value})
        if len(page) < PAGE:
            break
        start = _next_id(page[-1][0])
    return found[:limit]


def _id_key(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = str(entry_id).partition("-")
    return int(millis), int(sequence or 0)


def busy_consumers(
    redis_url: str,
    stream: str,
    group: str,
    busy_for: Any,
    min_lag: Any,
    timeout: Any,
    interval: Any,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Wait until every consumer of `group` has been away from the stream `busy_for`.

    A consumer that read a batch and has not come back for more although at
    least `min_lag` entries wait for the group is in the middle of its work. The
    moment every consumer is in that state is when a crash hurts most. To catch
    it early in a batch, a read is first seen (some consumer away for less than
    `busy_for`), then the crossing. Raises ActivityFailed when that moment does
    not come within `timeout`.
    """
    busy = require_duration("busy_for", busy_for, maximum=3600)
    lag_wanted = require_int("min_lag", min_lag, minimum=1)
    limit = require_duration("timeout", timeout, allow_equal=False, maximum=86400)
    pause = require_duration("interval", interval, allow_equal=False, maximum=60)
    started = time.monotonic()
    seen: dict[str, Any] = {}
    armed = False
    with connected(redis_url, secrets=secrets) as client:
        require_text("group", group)
        while True:
            facts = backlog(client, stream, group)
            consumers = client.xinfo_consumers(stream.strip(), group.strip())
            if consumers:
                nearest = min(consumers, key=lambda entry: int(entry["idle"]))
                seen = {
                    "consumer": nearest["name"],
                    "busy_ms": int(nearest["idle"]),
                    "pending": facts["pending"],
                    "lag": facts["lag"],
                    "consumer_count": len(consumers),
                }
                if seen["busy_ms"] < busy * 1000:
                    armed = True
                elif armed and facts["lag"] >= lag_wanted:
                    seen["waited_seconds"] = round(time.monotonic() - started, 3)
                    return seen
                else:
                    armed = False
            if time.monotonic() - started >= limit:
                break
            time.sleep(pause)
    raise ActivityFailed(
        f"stream {stream!r} group {group!r}: no moment within {limit:g} s when "
        f"every consumer was busy for {busy * 1000:g} ms with at least {lag_wanted} "
        f"entries waiting (last seen: {seen or 'no consumers'}); a fault now "
        "would hit an idle target and test nothing"
    )
