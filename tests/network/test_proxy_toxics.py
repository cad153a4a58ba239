"""Each toxic measured through the proxy with real clients (Redis, raw HTTP)."""

import socket
import statistics
import time

import pytest
import redis
import requests
from proxy_helpers import (
    body_of,
    http_get,
    pattern,
    ping_p50_ms,
    redis_client,
    redis_port,
)


@pytest.fixture
def redis_proxy(redis_url, make_proxy):
    """A proxy named "redis" in front of the test's Redis; yields its port."""
    return make_proxy("redis", f"127.0.0.1:{redis_port(redis_url)}")


def _client(port: int, timeout: float = 5.0) -> redis.Redis:
    return redis_client(port, timeout)


def test_latency_adds_its_delay_at_p50(redis_proxy, add_toxic):
    client = _client(redis_proxy)
    before = ping_p50_ms(client)
    add_toxic("redis", "latency", latency=100)  # reaches the live connection too
    after = ping_p50_ms(client)
    added = after - before
    print(f"latency 100 ms: p50 {before:.2f} -> {after:.2f} ms, added {added:.2f} ms")
    assert abs(added - 100.0) <= 5.0
    client.close()


def test_latency_over_http_adds_its_delay_at_p50(http_backend, make_proxy, add_toxic):
    port = make_proxy("http", http_backend)

    def p50_ms() -> float:
        times = [http_get(port, 100)[1][1] * 1000.0 for _ in range(15)]
        return statistics.median(times)

    before = p50_ms()
    add_toxic("http", "latency", latency=100)
    added = p50_ms() - before
    print(f"HTTP GET, latency 100 ms: added {added:.2f} ms at p50")
    assert abs(added - 100.0) <= 5.0


def test_upstream_latency_and_jitter(redis_proxy, add_toxic):
    client = _client(redis_proxy)
    before = ping_p50_ms(client, 10)
    add_toxic("redis", "latency", stream="upstream", latency=60, jitter=40)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        client.ping()
        times.append((time.perf_counter() - start) * 1000.0 - before)
    assert min(times) >= 19.0 and max(times) <= 100.0 + 50.0
    assert max(times) - min(times) > 10.0  # jitter spreads the delays
    client.close()


def test_bandwidth_holds_the_rate(http_backend, make_proxy, add_toxic):
    port = make_proxy("http", http_backend)
    add_toxic("http", "bandwidth", rate=100)  # KB/s
    response, (_, elapsed), _ = http_get(port, 200_000)
    assert body_of(response) == pattern(200_000)
    rate = len(response) / elapsed / 1000.0
    print(f"bandwidth 100 KB/s: {len(response)} B in {elapsed:.3f} s = {rate:.1f} KB/s")
    assert abs(rate - 100.0) <= 10.0


def test_timeout_blackholes_then_closes(redis_proxy, add_toxic):
    add_toxic("redis", "timeout", timeout=1000)
    client = _client(redis_proxy, timeout=0.3)
    with pytest.raises(redis.TimeoutError):
        client.ping()
    client.close()
    with socket.create_connection(("127.0.0.1", redis_proxy), timeout=5) as sock:
        start = time.perf_counter()
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b""  # nothing came back, then the close
        assert 0.85 <= time.perf_counter() - start <= 3.0


def test_timeout_zero_never_closes_and_removal_lets_data_through(
    proxy_api, redis_proxy, add_toxic
):
    add_toxic("redis", "timeout", timeout=0)
    with socket.create_connection(("127.0.0.1", redis_proxy), timeout=1.0) as sock:
        sock.sendall(b"PING\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(100)
        gone = requests.delete(
            f"{proxy_api}/proxies/redis/toxics/timeout_downstream", timeout=5
        )
        assert gone.status_code == 204
        sock.settimeout(5)
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"


def test_reset_peer_is_seen_as_a_connection_reset(redis_proxy, add_toxic):
    add_toxic("redis", "reset_peer", timeout=200)
    with socket.create_connection(("127.0.0.1", redis_proxy), timeout=5) as sock:
        start = time.perf_counter()
        sock.sendall(b"PING\r\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
        assert 0.15 <= time.perf_counter() - start <= 3.0
    client = _client(redis_proxy)
    with pytest.raises(redis.ConnectionError, match="(?i)reset"):
        client.ping()
    client.close()


def test_slow_close_delays_the_close_not_the_data(http_backend, make_proxy, add_toxic):
    port = make_proxy("http", http_backend)
    _, (first, eof), _ = http_get(port, 10)
    assert eof < 0.4
    add_toxic("http", "slow_close", delay=500)
    response, (first, eof), _ = http_get(port, 10)
    assert body_of(response) == pattern(10)
    assert first < 0.4
    assert 0.48 <= eof <= 3.0


def test_slicer_delivers_the_bytes_intact_in_slices(
    http_backend, make_proxy, add_toxic
):
    port = make_proxy("http", http_backend)
    add_toxic("http", "slicer", average_size=100, size_variation=50, delay=2000)
    response, (_, eof), reads = http_get(port, 4000)
    assert body_of(response) == pattern(4000)
    assert reads >= 5
    assert eof >= 30 * 0.002  # ~40 slices, 2 ms apart


def test_limit_data_closes_after_n_bytes(http_backend, make_proxy, add_toxic):
    port = make_proxy("http", http_backend)
    add_toxic("http", "limit_data", bytes=1000)
    response, _, _ = http_get(port, 10_000)
    assert len(response) == 1000
    assert response.startswith(b"HTTP/1.0 200")


def test_toxicity_zero_affects_no_connection(redis_proxy, add_toxic):
    add_toxic("redis", "latency", toxicity=0.0, latency=300)
    for _ in range(10):
        client = _client(redis_proxy)
        start = time.perf_counter()
        client.ping()
        assert time.perf_counter() - start < 0.2
        client.close()


def _raw_ping_seconds(sock: socket.socket) -> float:
    start = time.perf_counter()
    sock.sendall(b"PING\r\n")
    assert sock.recv(100) == b"+PONG\r\n"
    return time.perf_counter() - start


def test_toxicity_is_decided_per_connection(redis_proxy, add_toxic):
    add_toxic("redis", "latency", toxicity=0.5, latency=100)
    slow = 0
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", redis_proxy), timeout=5) as sock:
            first = _raw_ping_seconds(sock)
            second = _raw_ping_seconds(sock)
        assert (first >= 0.09) == (second >= 0.09)  # same fate on one connection
        slow += first >= 0.09
    assert 2 <= slow <= 18  # fails by chance with p = 4e-5
