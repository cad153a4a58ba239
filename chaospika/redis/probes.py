"""Probes of a Redis server (reachability, keys, memory, clients, pauses) and of a
stream and its consumer group (see `_streams` for the terms)."""

import time
import uuid

import redis
from chaoslib.types import Configuration, Secrets

from chaospika._secrets import redact_text
from chaospika._validate import require_duration, require_text
from chaospika.redis import _conn, _streams

__all__ = [
    "client_counts",
    "consumer_lag",
    "key_count",
    "memory_used",
    "pause_in_force",
    "pending_count",
    "ping",
    "queue_backlog",
    "stream_length",
    "time_to_drain",
]

SCAN_COUNT = 1000


def stream_length(
    redis_url: str,
    stream: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """Return the number of entries in `stream` (XLEN); a missing stream fails."""
    with _streams.connected(redis_url, secrets=secrets) as client:
        return int(client.xlen(_streams.require_stream(client, stream)))


def pending_count(
    redis_url: str,
    stream: str,
    group: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """Return the entries delivered to `group` but not acknowledged yet."""
    with _streams.connected(redis_url, secrets=secrets) as client:
        return _streams.backlog(client, stream, group)["pending"]


def consumer_lag(
    redis_url: str,
    stream: str,
    group: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """Return the entries of `stream` not yet delivered to `group`.

    Uses XINFO GROUPS ``lag`` when the server reports it (Redis >= 7), else counts
    the entries after the group's last-delivered-id with XRANGE.
    """
    with _streams.connected(redis_url, secrets=secrets) as client:
        return _streams.backlog(client, stream, group)["lag"]


def queue_backlog(
    redis_url: str,
    stream: str,
    group: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Return {"lag", "pending", "backlog": lag + pending, "length"} of the group."""
    with _streams.connected(redis_url, secrets=secrets) as client:
        return _streams.backlog(client, stream, group)


def time_to_drain(
    redis_url: str,
    stream: str,
    group: str,
    timeout: float = 30,
    interval: float = 0.2,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Measure how long `group` takes to have no lag and nothing pending.

    Polls every `interval` for at most `timeout` (seconds or "30s"). A backlog
    that does not drain is a result, not an error: {"drained": false, ...}.
    Returns {"drained", "drain_seconds", "backlog_at_start", "lag", "pending",
    "backlog"}; put a tolerance on ``$.drained``.
    """
    return _streams.wait_drained(
        redis_url, stream, group, timeout, interval, secrets=secrets
    )


def ping(
    redis_url: str,
    timeout: float = 1.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """PING the server and wait at most `timeout` (seconds or "500ms") for PONG.

    A server that is down, paused or too slow is a result, not a failure:
    {"ok": false, "latency_ms": null, "error": "..."}; else {"ok": true,
    "latency_ms", "error": null}. No retry: one PING, one answer.
    """
    limit = require_duration("timeout", timeout, allow_equal=False, maximum=60)
    client = _conn.open_client(redis_url, secrets=secrets, timeout=limit)
    started = time.monotonic()
    try:
        client.ping()
    except redis.exceptions.RedisError as error:
        text = redact_text(error) or type(error).__name__
        return {"ok": False, "latency_ms": None, "error": text}
    finally:
        client.close()
    latency = round((time.monotonic() - started) * 1000, 3)
    return {"ok": True, "latency_ms": latency, "error": None}


def key_count(
    redis_url: str,
    pattern: str = "*",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """Return how many keys of the URL's db match `pattern` ("*": DBSIZE, else SCAN)."""
    pattern = require_text("pattern", pattern)
    with _conn.connected(redis_url, secrets=secrets, binary=True) as client:
        if pattern == "*":
            return int(client.dbsize())
        seen: set[bytes] = set()
        cursor = 0
        for _ in range(10_000_000):
            cursor, keys = client.scan(cursor, match=pattern, count=SCAN_COUNT)
            seen.update(keys)
            if int(cursor) == 0:
                break
        return len(seen)


def memory_used(
    redis_url: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Return the server's memory (INFO memory) in bytes.

    {"used_memory_bytes", "used_memory_rss_bytes", "used_memory_peak_bytes",
    "maxmemory_bytes" (0: no limit), "fragmentation_ratio"}.
    """
    with _conn.connected(redis_url, secrets=secrets) as client:
        info = client.info("memory")
    return {
        "used_memory_bytes": int(info.get("used_memory", 0)),
        "used_memory_rss_bytes": int(info.get("used_memory_rss", 0)),
        "used_memory_peak_bytes": int(info.get("used_memory_peak", 0)),
        "maxmemory_bytes": int(info.get("maxmemory", 0)),
        "fragmentation_ratio": float(info.get("mem_fragmentation_ratio", 0.0)),
    }


def client_counts(
    redis_url: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Return {"connected_count", "blocked_count"} (INFO clients).

    Blocked: waiting in BLPOP, XREADGROUP BLOCK, WAIT... or held by a CLIENT
    PAUSE WRITE. This probe's own connection is counted as connected.
    """
    with _conn.connected(redis_url, secrets=secrets) as client:
        info = client.info("clients")
    return {
        "connected_count": int(info.get("connected_clients", 0)),
        "blocked_count": int(info.get("blocked_clients", 0)),
    }


def pause_in_force(
    redis_url: str,
    timeout: float = 0.5,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Tell whether a CLIENT PAUSE holds the server's clients, and which one.

    Redis 7.0 reports no pause (INFO has no field for it), so the probe finds
    out: a PING that gets no answer within `timeout` means a pause ALL (or a
    server too busy to answer: DEBUG SLEEP, a long script; ``detail`` says so);
    then a PUBLISH to a channel of its own (nobody listens) that gets no answer
    means a pause WRITE. Returns {"paused", "mode": "all"|"write"|null,
    "reachable", "detail"}; a server that is down is {"paused": false,
    "reachable": false}.
    """
    limit = require_duration("timeout", timeout, allow_equal=False, maximum=60)
    client = _conn.open_client(redis_url, secrets=secrets, timeout=limit)
    try:
        try:
            client.ping()
        except redis.exceptions.TimeoutError:
            return {
                "paused": True,
                "mode": "all",
                "reachable": True,
                "detail": f"PING not answered within {limit:g} s: a pause ALL, or "
                "a server too busy to answer (DEBUG SLEEP, a long script)",
            }
        except redis.exceptions.ConnectionError as error:
            detail = f"unreachable: {redact_text(error)}"
            return {"paused": False, "mode": None, "reachable": False, "detail": detail}
        channel = f"chaospika:pause-probe:{uuid.uuid4().hex}"
        try:
            client.publish(channel, "")
        except redis.exceptions.TimeoutError:
            return {
                "paused": True,
                "mode": "write",
                "reachable": True,
                "detail": f"PING answered, PUBLISH not within {limit:g} s",
            }
    finally:
        client.close()
    return {
        "paused": False,
        "mode": None,
        "reachable": True,
        "detail": "PING and PUBLISH answered",
    }
