"""Actions on a Redis stream's consumer group: wait until it drained, or is mid-work."""

from chaoslib.types import Configuration, Secrets

from chaospika.redis import _streams

__all__ = ["wait_for_busy_consumer", "wait_for_drain"]


def wait_for_drain(
    redis_url: str,
    stream: str,
    group: str,
    timeout: float = 30,
    interval: float = 0.2,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Wait until `group` has no lag and nothing pending on `stream`.

    That is, its consumers received and acknowledged every entry. Polls every
    `interval` and fails after `timeout` (seconds or "30s") with the backlog
    left. Returns {"drained": true, "drain_seconds", "backlog_at_start", ...}.
    To measure a drain that may not happen, use the probe `time_to_drain`.
    """
    return _streams.drain(redis_url, stream, group, timeout, interval, secrets=secrets)


def wait_for_busy_consumer(
    redis_url: str,
    stream: str,
    group: str,
    busy_for: float = 0.05,
    min_lag: int = 1,
    timeout: float = 30,
    interval: float = 0.005,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Wait for the moment a crash hurts: every consumer of `group` is mid-batch.

    That is, no consumer has read from `stream` for at least `busy_for` (seconds or "50ms") while at
    least `min_lag` entries wait for the group: each one holds a batch it is
    still working on. Put it right before a fault. Fails after `timeout` (the
    fault would hit an idle target). Returns {"consumer", "busy_ms", "pending",
    "lag", "consumer_count", "waited_seconds"}.
    """
    return _streams.busy_consumers(
        redis_url, stream, group, busy_for, min_lag, timeout, interval, secrets=secrets
    )
