"""Servers the benchmarks load, each started on the server core and stopped by pid."""

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from procs import SERVER_CORE, pinned, start, stop

from chaospika._ports import free_port, wait_for_port

__all__ = ["nginx", "sandbox", "ws_echo"]

STARTUP_TIMEOUT = 10.0  # seconds for a server to accept connections
SANDBOX_TIMEOUT = 90.0  # seconds for `chaospika sandbox up/down`
STATIC_BODY = "chaospika bench: a small static body served by nginx.\n"
BENCH_DIR = Path(__file__).resolve().parent

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ root {dir}/www; }}
    }}
}}
"""


@contextmanager
def nginx(workdir: str) -> Iterator[str]:
    """nginx (one worker) serving a small static file; yields its URL."""
    folder = Path(workdir, "nginx")
    (folder / "www").mkdir(parents=True)
    (folder / "www" / "index.html").write_text(STATIC_BODY)
    for path in (workdir, folder, folder / "www"):
        os.chmod(path, 0o755)  # the worker runs as nobody when we are root
    os.chmod(folder / "www" / "index.html", 0o644)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=folder, port=port))
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    server = start(
        [binary, "-c", str(conf), "-p", str(folder), "-e", str(folder / "error.log")],
        log=str(folder / "stdout.log"),
    )
    try:
        if not wait_for_port("127.0.0.1", port, STARTUP_TIMEOUT):
            raise RuntimeError(f"nginx did not start: {_tail(folder / 'error.log')}")
        yield f"http://127.0.0.1:{port}/index.html"
    finally:
        stop(server)


@contextmanager
def ws_echo(workdir: str) -> Iterator[str]:
    """A `websockets` echo server (bench/ws_echo.py); yields its ws:// URL."""
    port = free_port()
    log = Path(workdir, "ws_echo.log")
    server = start(
        [sys.executable, str(BENCH_DIR / "ws_echo.py"), str(port)], log=str(log)
    )
    try:
        if not wait_for_port("127.0.0.1", port, STARTUP_TIMEOUT):
            raise RuntimeError(f"ws echo server did not start: {_tail(log)}")
        yield f"ws://127.0.0.1:{port}/"
    finally:
        stop(server)


@contextmanager
def sandbox(workdir: str, product: str, stock: int) -> Iterator[str]:
    """`chaospika sandbox up` on the server core, `product` stocked; yields the URL."""
    folder = str(Path(workdir, "sandbox"))
    api_port, redis_port = free_port(), free_port()
    cli = [_chaospika(), "sandbox"]
    up = [*cli, "up", "--dir", folder]
    up += ["--api-port", str(api_port), "--redis-port", str(redis_port)]
    try:
        subprocess.run(
            pinned(SERVER_CORE, up),
            check=True,
            timeout=SANDBOX_TIMEOUT,
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{api_port}"
        _post_json(f"{url}/products/{product}/init", {"stock": stock})
        yield url
    finally:
        subprocess.run(
            [*cli, "down", "--dir", folder],
            timeout=SANDBOX_TIMEOUT,
            stdout=subprocess.DEVNULL,
            check=False,
        )


def _chaospika() -> str:
    beside = Path(sys.executable).with_name("chaospika")
    return str(beside) if beside.exists() else shutil.which("chaospika") or "chaospika"


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text()[-limit:]
    except OSError:
        return ""
