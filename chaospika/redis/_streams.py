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

from chaospika._clients import redis_client
from chaospika._validate import require_number, require_text

__all__ = ["backlog", "connected", "consumer_group", "drain", "require_stream"]

PAGE = 1000
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _where(client: redis.Redis) -> str:
    options = client.connection_pool.connection_kwargs
    return options.get("path") or f"{options.get('host')}:{options.get('port')}"


@contextmanager
def connected(redis_url: str) -> Iterator[redis.Redis]:
    """Yield a client of `redis_url`; Redis errors become ActivityFailed."""
    client = redis_client(redis_url)
    try:
        yield client
    except UNREACHABLE as error:
        raise ActivityFailed(f"cannot reach Redis at {_where(client)}: {error}")
    except redis.exceptions.RedisError as error:
        raise ActivityFailed(f"Redis at {_where(client)} answered: {error}")
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


def drain(
    redis_url: str, stream: str, group: str, timeout: Any, interval: Any
) -> dict[str, Any]:
    """Wait until the group has no lag and nothing pending; raise after `timeout`.

    Losing the connection meanwhile (Redis restarting) is retried until `timeout`.
    """
    limit = require_number("timeout", timeout, maximum=86400)
    pause = require_number("interval", interval, allow_equal=False, maximum=3600)
    started = time.monotonic()
    with connected(redis_url) as client:
        facts: dict[str, int] | None = backlog(client, stream, group)
        at_start, problem = facts["backlog"], ""
        for _ in range(int(limit / pause) + 2):
            remaining = started + limit - time.monotonic()
            if (facts and facts["backlog"] == 0) or remaining <= 0:
                break
            time.sleep(min(pause, remaining))
            try:
                facts, problem = backlog(client, stream, group), ""
            except UNREACHABLE as error:
                facts, problem = None, f"; Redis unreachable: {error}"
    if facts and facts["backlog"] == 0:
        seconds = round(time.monotonic() - started, 3)
        return {"drained": True, "seconds": seconds, "backlog_at_start": at_start}
    left = f"lag={facts['lag']} pending={facts['pending']}" if facts else "unknown"
    raise ActivityFailed(
        f"stream {stream!r} group {group!r} not drained within {limit:g} s: "
        f"backlog left {left} (backlog at start {at_start}){problem}"
    )
