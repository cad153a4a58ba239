"""`python -m chaospika.network.server`: config file, expiry with nobody left, SIGTERM."""

import json
import signal
import subprocess
import sys
import time

import requests
from proxy_helpers import redis_client, redis_port

from chaospika._ports import free_port


def _start_server(tmp_path, proxies):
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps(proxies))
    api_port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaospika.network.server",
            "--listen",
            f"127.0.0.1:{api_port}",
            "-config",
            str(config),
        ],
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
    finally:
        process.send_signal(signal.SIGTERM)
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
