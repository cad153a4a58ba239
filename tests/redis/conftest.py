"""Redis servers the Redis fault tests own: with DEBUG enabled, or run from a pidfile."""

import os
import signal

import pytest
from redis_fault_helpers import start_server_process

from chaospika import _proc
from chaospika._ports import free_port, wait_for_port
from chaospika.sandbox.redis_server import redis_command


@pytest.fixture
def debug_redis_url(tmp_path):
    """A fresh Redis that allows DEBUG from local connections."""
    port = free_port()
    argv = redis_command(port, str(tmp_path)) + ["--enable-debug-command", "local"]
    process = start_server_process(argv, port, tmp_path / "debug-redis.log")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def pidfile_redis(tmp_path):
    """A Redis started like the sandbox's: pid in redis.pid, command in redis.pid.cmd.json.

    Yields {"url", "pidfile", "port"}; whatever process the pidfile names at the
    end (the fault may have restarted it) is stopped.
    """
    folder = tmp_path / "managed"
    folder.mkdir()
    port = free_port()
    pidfile = str(folder / "redis.pid")
    record = {
        "argv": redis_command(port, str(folder)),
        "cwd": str(folder),
        "env": {},
        "log": str(folder / "redis.log"),
        "inherit_env": True,
    }
    _proc.store_command(pidfile, record)
    pid = _proc.spawn(record["argv"], record["cwd"], dict(os.environ), record["log"])
    _proc.write_pidfile(pidfile, pid)
    try:
        assert wait_for_port("127.0.0.1", port, 10), (folder / "redis.log").read_text()
        yield {"url": f"redis://127.0.0.1:{port}/0", "pidfile": pidfile, "port": port}
    finally:
        last = _proc.read_pid(pidfile) if os.path.exists(pidfile) else None
        for number in {pid, last} - {None}:
            try:
                os.kill(number, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child = _proc.spawned(number)
            if child is not None:
                child.wait()
