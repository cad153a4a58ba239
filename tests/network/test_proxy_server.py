"""`chaospika proxy` / `python -m chaospika.network.server`: config, expiry, signals."""

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import requests
from proxy_helpers import redis_client, redis_port

from chaospika._ports import free_port
from chaospika.network.priority import RELAY_NICE
from chaospika.network.server import ProxyServer, ProxyServerThread

CHAOSPIKA = str(Path(sys.executable).with_name("chaospika"))
SERVER = [sys.executable, "-m", "chaospika.network.server"]


def _start_server(tmp_path, proxies, command=(CHAOSPIKA, "proxy")):
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps(proxies))
    api_port = free_port()
    process = subprocess.Popen(
        [*command, "--listen", f"127.0.0.1:{api_port}", "-config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for _ in range(50):  # log lines come first; this one once it serves
        lines.append(process.stdout.readline())
        if "listening on" in lines[-1] or not lines[-1]:
            break
    assert "listening on" in lines[-1], lines
    return process, f"http://127.0.0.1:{api_port}"


def _ping_seconds(client):
    start = time.perf_counter()
    client.ping()
    return time.perf_counter() - start


def test_expiry_is_enforced_with_no_client_alive(tmp_path, redis_url):
    proxy_port = free_port()
    upstream = f"127.0.0.1:{redis_port(redis_url)}"
    process, api = _start_server(
        tmp_path,
        [{"name": "cache", "listen": f"127.0.0.1:{proxy_port}", "upstream": upstream}],
    )
    try:
        client = redis_client(proxy_port)
        assert _ping_seconds(client) < 0.2
        adder = (
            "from chaospika.network.client import add_toxic; "
            f"add_toxic({api!r}, 'cache', "
            "{'type': 'latency', 'attributes': {'latency': 300}, 'ttl': 1.5})"
        )
        subprocess.run([sys.executable, "-c", adder], check=True, timeout=30)
        added = time.monotonic()  # the process that added the toxic is gone
        assert _ping_seconds(client) >= 0.29
        toxic = requests.get(f"{api}/proxies/cache/toxics", timeout=5).json()[0]
        assert 0 < toxic["ttl"] <= 1.5 and toxic["expires_at"] > time.time()
        time.sleep(max(0.0, added + 1.8 - time.monotonic()))
        assert requests.get(f"{api}/proxies/cache/toxics", timeout=5).json() == []
        assert _ping_seconds(client) < 0.2  # the live connection is healed too
        client.close()

        cutter = (
            "from chaospika.network.client import disable_proxy; "
            f"disable_proxy({api!r}, 'cache', ttl=0.5)"
        )
        subprocess.run([sys.executable, "-c", cutter], check=True, timeout=30)
        cut = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            redis_client(proxy_port).ping()  # refused: the proxy is down
        time.sleep(max(0.0, cut + 0.8 - time.monotonic()))
        assert redis_client(proxy_port).ping()  # it came back by itself
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_the_server_module_takes_the_same_config_and_stops_on_sigint(
    tmp_path, redis_url
):
    upstream = f"127.0.0.1:{redis_port(redis_url)}"
    config = [{"name": "a", "upstream": upstream}, {"name": "b", "upstream": upstream}]
    process, api = _start_server(tmp_path, config, SERVER)
    try:
        shown = requests.get(f"{api}/proxies", timeout=5).json()
        assert sorted(shown) == ["a", "b"] and shown["a"]["enabled"] is True
        port = int(shown["b"]["listen"].rsplit(":", 1)[1])
        assert redis_client(port).ping()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_refuses_a_non_loopback_api_address():
    result = subprocess.run(
        [sys.executable, "-m", "chaospika.network.server", "--listen", "0.0.0.0:0"],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "not allowed" in result.stderr


def _may_raise_priority() -> bool:
    """Whether this process may lower a thread's nice to RELAY_NICE (root, RLIMIT_NICE)."""
    if os.geteuid() == 0:
        return True
    return resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20 - RELAY_NICE


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")
def test_the_relay_thread_takes_a_higher_priority_when_permitted():
    caller = threading.get_native_id()
    before = _nice(caller)
    server = ProxyServerThread("127.0.0.1:0")
    server.start()
    try:
        relay = _nice(server._thread.native_id)
        assert _nice(caller) == before  # only the proxy's own thread
    finally:
        server.stop()
    assert relay == (min(before, RELAY_NICE) if _may_raise_priority() else before)
    seen: list[int] = []

    async def serve_and_stop(relay_nice: int | None) -> None:
        proxy = ProxyServer("127.0.0.1:0", relay_nice=relay_nice)
        await proxy.start()
        seen.append(_nice(threading.get_native_id()))
        await proxy.stop()
        seen.append(_nice(threading.get_native_id()))

    asyncio.run(serve_and_stop(RELAY_NICE))
    asyncio.run(serve_and_stop(None))  # None: the thread keeps its priority
    assert seen[1:] == [before, before, before]  # given back by stop()
    assert seen[0] == relay


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")
def test_chaospika_proxy_passes_relay_nice_to_the_server(tmp_path):
    """`chaospika proxy --relay-nice -3`: the standalone server relays on its main
    thread, which takes nice -3 when permitted (threads started after it inherit it)."""
    if not _may_raise_priority():
        pytest.skip("this process may not lower a nice value")
    process, _ = _start_server(
        tmp_path, [], command=(CHAOSPIKA, "proxy", "--relay-nice", "-3")
    )
    try:
        assert _nice(process.pid) == -3
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
