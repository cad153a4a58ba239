"""Fixtures and helpers to run real sandbox processes in tests; all are torn down.

In a test module::

    pytest_plugins = ["sandbox_fixtures"]

    def test_something(make_sandbox, tmp_path):
        state = make_sandbox(tmp_path, bugs=("oversell",))
        state["api_url"], state["redis_url"], state["db_url"], ...

``make_sandbox(tmp_path, bugs=(), db_url=None, **opts)`` runs
``chaospika.sandbox.manager.up`` on free ports in a new folder under
`tmp_path` (opts: work_ms, batch, api_port, redis_port, redis_url, timeout,
redis_timeout, proxy=True with proxy_port and proxy_redis_port on free ports
too) and returns the state dict; every sandbox made is stopped with ``down`` at the
end of the test. ``sandbox`` is one default sandbox made that way.
``spawn`` starts single services (``python -m chaospika.sandbox.api ...``).
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaospika._ports import free_port
from chaospika.ledger.records import process_start
from chaospika.sandbox import manager


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def wait_until(check: Callable[[], Any], timeout: float = 10.0, step: float = 0.02):
    """Poll `check` until it returns a truthy value (returned) or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        time.sleep(step)


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM `process`, SIGKILL it after `timeout`; return its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@pytest.fixture
def spawn(tmp_path):
    """Start ``python -m <module> <args>`` processes, logging to tmp_path; stop them all.

    ``spawn(module, *args, log_name=None) -> Popen``; the log path is on
    ``process.log_path``.
    """
    processes: list[subprocess.Popen] = []

    def start(module: str, *args: str, log_name: str | None = None):
        name = log_name or f"{module.rsplit('.', 1)[-1]}-{len(processes)}.log"
        log_path = tmp_path / name
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module, *map(str, args)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        process.log_path = log_path
        processes.append(process)
        return process

    yield start
    for process in reversed(processes):
        stop_process(process, timeout=5.0)


@pytest.fixture
def make_sandbox():
    """Factory ``make_sandbox(tmp_path, bugs=(), db_url=None, **opts) -> state``."""
    folders: list[str] = []

    def make(tmp_path, bugs=(), db_url=None, **opts) -> dict:
        name = "sandbox" if not folders else f"sandbox-{len(folders) + 1}"
        folder = str(tmp_path / name)
        if opts.get("redis_url") is None:
            opts.setdefault("redis_port", free_port())
        opts.setdefault("api_port", free_port())
        if opts.get("proxy"):
            opts.setdefault("proxy_port", free_port())
            opts.setdefault("proxy_redis_port", free_port())
            opts.setdefault("proxy_api_port", free_port())
        folders.append(folder)
        return manager.up(folder, bugs=bugs, db_url=db_url, **opts)

    yield make
    leftovers = []
    for folder in reversed(folders):
        # the services running before `down`, each as (pid, its start time): a
        # stale pidfile's pid, or a pid reused later by another program, is not one
        running = [manager.service_running(folder, n) for n in manager.SERVICES]
        started = {pid: process_start(pid) for pid, alive in running if alive}
        manager.down(folder)
        leftovers += [
            pid
            for pid, since in started.items()
            if pid_alive(pid) and process_start(pid) == since
        ]
    assert not leftovers, f"sandbox processes still running after down: {leftovers}"


@pytest.fixture
def sandbox(make_sandbox, tmp_path) -> dict:
    """One running default sandbox (no bugs, SQLite in its folder), stopped after."""
    return make_sandbox(tmp_path)
