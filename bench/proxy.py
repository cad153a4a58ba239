"""Benchmark of the fault proxy (`chaospika.network`): `python bench/proxy.py`.

Starts its own Redis and ``python -m chaospika.network.server`` (both pinned to
core 0 with taskset when available; this client runs on core 1), then prints
Markdown: PING round trip and bulk GET throughput direct vs through the proxy,
and the error of a 100 ms latency toxic (p50 over 50 PINGs) and of a 1000 KB/s
bandwidth toxic (3 MB). Every step is bounded; every process is stopped.
"""

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import redis

from chaospika._ports import free_port, wait_for_port
from chaospika.network.client import add_toxic, create_proxy, remove_toxic
from chaospika.sandbox.redis_server import start_redis

VALUE_BYTES = 3_000_000


def _pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


def _pings_ms(client: redis.Redis, count: int) -> list[float]:
    client.ping()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        client.ping()
        times.append((time.perf_counter() - start) * 1000.0)
    return sorted(times)


def _get_seconds(client: redis.Redis) -> float:
    start = time.perf_counter()
    assert len(client.get("blob")) == VALUE_BYTES
    return time.perf_counter() - start


def _row(name: str, direct: float, proxied: float, unit: str) -> str:
    return f"| {name} | {direct:.2f} {unit} | {proxied:.2f} {unit} |"


def main() -> int:
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    folder = tempfile.mkdtemp(prefix="pika-proxy-bench-")
    redis_port, api_port = free_port(), free_port()
    store = start_redis(redis_port, folder)
    api = f"http://127.0.0.1:{api_port}"
    server = subprocess.Popen(
        [
            *_pinned(0),
            sys.executable,
            "-m",
            "chaospika.network.server",
            "--listen",
            f"127.0.0.1:{api_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_for_port("127.0.0.1", api_port, 30):
            print("the proxy server did not start", file=sys.stderr)
            return 1
        listen = create_proxy(api, "redis", f"127.0.0.1:{redis_port}")["listen"]
        proxy_port = int(listen.rsplit(":", 1)[1])
        direct = redis.Redis(port=redis_port, socket_timeout=30)
        proxied = redis.Redis(port=proxy_port, socket_timeout=30)
        direct.set("blob", os.urandom(VALUE_BYTES))
        ping_direct, ping_proxied = _pings_ms(direct, 2000), _pings_ms(proxied, 2000)
        get_direct = min(_get_seconds(direct) for _ in range(20))
        get_proxied = min(_get_seconds(proxied) for _ in range(20))
        print("| measure | direct | through the proxy |\n|---|---|---|")
        for name, index in (("PING p50", 1000), ("PING p99", 1980)):
            print(_row(name, ping_direct[index], ping_proxied[index], "ms"))
        mb = VALUE_BYTES / 1e6
        print(_row("GET 3 MB", mb / get_direct, mb / get_proxied, "MB/s"))

        add_toxic(api, "redis", {"type": "latency", "attributes": {"latency": 100}})
        p50 = statistics.median(_pings_ms(proxied, 50)) - ping_proxied[1000]
        remove_toxic(api, "redis", "latency_downstream")
        add_toxic(api, "redis", {"type": "bandwidth", "attributes": {"rate": 1000}})
        rate = VALUE_BYTES / _get_seconds(proxied) / 1000.0
        remove_toxic(api, "redis", "bandwidth_downstream")
        print("\n| toxic | asked | measured | error |\n|---|---|---|---|")
        print(
            f"| latency (p50 added, 50 PINGs) | 100 ms | {p50:.2f} ms | "
            f"{p50 - 100:+.2f} ms |"
        )
        print(
            f"| bandwidth (3 MB GET) | 1000 KB/s | {rate:.1f} KB/s | "
            f"{(rate - 1000) / 10:+.2f} % |"
        )
        return 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        store.terminate()
        store.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
