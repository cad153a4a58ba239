"""Probes of a Redis stream and its consumer group (see `_streams` for the terms)."""

from chaoslib.types import Configuration, Secrets

from chaospika.redis import _streams

__all__ = [
    "consumer_lag",
    "pending_count",
    "queue_backlog",
    "stream_length",
    "time_to_drain",
]


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
