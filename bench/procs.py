"""Child processes of the benchmark: pinned, bounded in time, measured by rusage."""

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

__all__ = [
    "GENERATOR_CORE",
    "SERVER_CORE",
    "Measured",
    "measure",
    "pinned",
    "start",
    "stop",
]

GENERATOR_CORE = "1"  # every load generator runs here
SERVER_CORE = "0"  # every server the generators load runs here
POLL = 0.02  # seconds between two looks at a measured child


@dataclass
class Measured:
    """What one generator process cost: CPU seconds, peak RSS and wall time."""

    argv: list[str]
    returncode: int
    cpu_s: float
    user_s: float
    system_s: float
    maxrss_mb: float
    wall_s: float
    timed_out: bool
    stdout: str
    stderr: str


def pinned(core: str, argv: list[str]) -> list[str]:
    """`argv` run on `core` only (taskset execs, so the pid stays the same)."""
    return ["taskset", "-c", core, *argv]


def measure(
    argv: list[str], timeout: float, env: dict | None = None, cwd: str | None = None
) -> Measured:
    """Run `argv` on the generator core; kill it after `timeout` seconds.

    CPU time and peak RSS come from the child's own rusage (os.wait4), which
    also counts the descendants it waited for.
    """
    command = pinned(GENERATOR_CORE, argv)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.monotonic()
        child = subprocess.Popen(
            command, stdout=out, stderr=err, env=env, cwd=cwd, close_fds=True
        )
        timed_out = False
        deadline = began + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline and not timed_out:
                timed_out = True
                os.kill(child.pid, signal.SIGKILL)
            time.sleep(POLL)
        wall = time.monotonic() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return Measured(
        argv=command,
        returncode=child.returncode,
        cpu_s=usage.ru_utime + usage.ru_stime,
        user_s=usage.ru_utime,
        system_s=usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,
        wall_s=wall,
        timed_out=timed_out,
        stdout=stdout,
        stderr=stderr,
    )


def start(argv: list[str], log: str, cwd: str | None = None) -> subprocess.Popen:
    """Start a server on the server core, its output in `log`."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            pinned(SERVER_CORE, argv),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            close_fds=True,
        )


def stop(
    child: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0
) -> None:
    """Stop a server this benchmark started, by its pid; SIGKILL after `grace`."""
    if child.poll() is not None:
        return
    child.send_signal(sig)
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(grace)
