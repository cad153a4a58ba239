"""Helpers of the fault proxy tests: payloads, timed Redis and HTTP round trips."""

import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

PATTERN = bytes(range(256))


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[str]:
    """Serve `server` (bound to a loopback port) from a thread; yield ``host:port``."""
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}
    )
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def pattern(size: int) -> bytes:
    """`size` bytes of a repeating, recognisable pattern."""
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def redis_port(redis_url: str) -> int:
    return int(redis_url.rsplit(":", 1)[1].split("/")[0])


def ping_p50_ms(client: redis.Redis, count: int = 30) -> float:
    """Median round trip of `count` PINGs, in ms."""
    client.ping()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        client.ping()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def http_get(
    port: int, size: int, timeout: float = 10.0
) -> tuple[bytes, list[float], int]:
    """GET /bytes/size through `port` on a raw socket, read to EOF.

    Returns (everything read, [time of first byte, time of EOF] since the
    request, number of reads).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        start = time.perf_counter()
        sock.sendall(f"GET /bytes/{size} HTTP/1.0\r\n\r\n".encode())
        parts, first = [], None
        deadline = start + timeout
        while time.perf_counter() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            first = first if first is not None else time.perf_counter() - start
            parts.append(data)
        return b"".join(parts), [first or 0.0, time.perf_counter() - start], len(parts)


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


def redis_client(port: int, timeout: float = 5.0) -> redis.Redis:
    """A client of 127.0.0.1:`port` that never retries (a fault must show)."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
