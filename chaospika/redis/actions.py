"""Actions on a Redis stream's consumer group: wait until the consumers drained it."""

from chaoslib.types import Configuration, Secrets

from chaospika.redis import _streams

__all__ = ["wait_for_drain"]


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
    `interval` seconds and fails after `timeout` seconds with the backlog left.
    Returns {"drained": true, "seconds", "backlog_at_start"}.
    """
    return _streams.drain(redis_url, stream, group, timeout, interval)
