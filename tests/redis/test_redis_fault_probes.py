"""Probes of a Redis server: ping, key count, memory, clients (servers the tests start)."""

import threading

import pytest
import redis
from chaoslib.exceptions import ActivityFailed
from sandbox_fixtures import wait_until

from chaospika._ports import free_port
from chaospika.redis.probes import client_counts, key_count, memory_used, ping


def test_ping_reports_a_server_that_is_down_as_data():
    down = ping(f"redis://127.0.0.1:{free_port()}/0", timeout="200ms")
    assert down["ok"] is False and down["latency_ms"] is None
    assert "refused" in down["error"].lower() or "connect" in down["error"].lower()
    with pytest.raises(ActivityFailed, match="'timeout'"):
        ping("redis://127.0.0.1:1/0", timeout=0)


def test_ping_key_count_memory(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.mset({**{f"stock:{n}": n for n in range(1500)}, "other": 1})

    up = ping(redis_url)
    assert up["ok"] is True and 0 < up["latency_ms"] < 1000 and up["error"] is None
    assert key_count(redis_url) == 1501
    assert key_count(redis_url, pattern="stock:1*") == 1 + 10 + 100 + 500
    memory = memory_used(redis_url)
    assert memory["used_memory_bytes"] > 100_000
    assert memory["maxmemory_bytes"] == 0
    assert set(memory) == {
        "used_memory_bytes",
        "used_memory_rss_bytes",
        "used_memory_peak_bytes",
        "maxmemory_bytes",
        "fragmentation_ratio",
    }


def test_client_counts_see_a_blocked_client(redis_url):
    waiter = redis.Redis.from_url(redis_url)
    thread = threading.Thread(target=lambda: waiter.blpop("queue", timeout=5))
    thread.start()
    try:
        wait_until(lambda: client_counts(redis_url)["blocked_count"] == 1, 5, 0.02)
        assert client_counts(redis_url)["connected_count"] == 2
    finally:
        redis.Redis.from_url(redis_url).rpush("queue", "go")
        thread.join(5)
