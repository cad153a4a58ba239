"""Pidfiles, /proc facts and recorded start commands shared by the process activities.

A process is named by a pidfile or a pid, never by a pattern. Before a fault kills a
process, its start command is recorded in ``<pidfile>.cmd.json`` (``argv``, ``cwd``,
``env``, ``log``, ``inherit_env``; see chaospika._proc) so that it can be started
again exactly. The primitives of chaospika._proc are wrapped here so that their
failures are ActivityFailed. Before anything is recorded or signalled,
chaospika.process._guard refuses targets a fault must never touch.
"""

import logging
import os
import shutil
import signal as signals
import time
from dataclasses import dataclass
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaospika import _proc
from chaospika._proc import command_file, log_tail, store_command, write_pidfile
from chaospika._secrets import redact_argv
from chaospika._validate import require_int, require_path
from chaospika.process import _guard

__all__ = [
    "Target",
    "command_file",
    "describe",
    "exit_code",
    "load_command",
    "locate",
    "log_tail",
    "parse_signal",
    "proc_state",
    "record_command",
    "send_signal",
    "spawn",
    "store_command",
    "wait_for_state",
    "wait_until_gone",
    "write_pidfile",
]

logger = logging.getLogger("chaostoolkit")
PROC = "/proc"
# A live process that started this long after its pidfile was written is not the
# process the pidfile names: its pid was reused.
REUSE_TOLERANCE_SECONDS = 2.0
POLL_SECONDS = 0.02
STATE_NAMES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk-sleep",
    "T": "stopped",
    "t": "tracing-stop",
    "Z": "zombie",
    "X": "dead",
    "I": "idle",
}


@dataclass
class Target:
    """The process a pidfile or pid names; `reason` says why it is not running."""

    pid: int | None
    pidfile: str | None
    reason: str | None = None

    @property
    def alive(self) -> bool:
        return self.reason is None


def _require_proc() -> None:
    if not os.path.isdir(os.path.join(PROC, "self")):
        raise ActivityFailed("process activities need a Linux /proc filesystem")


def _check_pid(name: str, value: Any) -> int:
    pid = require_int(name, value, minimum=1)
    if pid == 1 or pid == os.getpid():
        reason = _guard.refusal(pid)
        raise ActivityFailed(f"argument '{name}': refusing to send a signal: {reason}")
    return pid


def _read_pidfile(path: str) -> int | None:
    try:
        pid = _proc.read_pid(path)
    except OSError as error:
        raise ActivityFailed(f"argument 'pidfile': cannot read {path!r}: {error}")
    except ValueError as error:
        raise ActivityFailed(f"argument 'pidfile': {error}")
    return None if pid is None else _check_pid("pidfile", pid)


def proc_state(pid: int) -> str | None:
    """Return the one-letter /proc state of `pid`, or None if there is no such pid."""
    stat = _stat_fields(pid)
    return stat[0] if stat else None


def _stat_fields(pid: int) -> list[str] | None:
    """Return the fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        with open(os.path.join(PROC, str(pid), "stat")) as handle:
            content = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return content.rsplit(")", 1)[1].split()


def _reap_if_child(pid: int) -> None:
    child = _proc.spawned(pid)
    if child is not None:
        child.poll()  # reaps it once it exited; keeps the exit code


def _started_at(pid: int) -> float | None:
    """Return the start time of `pid` as epoch seconds (1/CLK_TCK precision)."""
    fields = _stat_fields(pid)
    if not fields:
        return None
    with open(os.path.join(PROC, "stat")) as handle:
        boot = next(
            float(line.split()[1]) for line in handle if line.startswith("btime ")
        )
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _why_not_running(pid: int, pidfile: str | None) -> str | None:
    _reap_if_child(pid)
    state = proc_state(pid)
    if state is None:
        return f"process {pid} is not running"
    if state in ("Z", "X"):
        return f"process {pid} has exited (zombie)"
    if pidfile:
        started = _started_at(pid)
        try:
            written = os.stat(pidfile).st_mtime
        except FileNotFoundError:
            return f"pidfile {pidfile!r} was removed"
        if started is not None and started > written + REUSE_TOLERANCE_SECONDS:
            return (
                f"pid {pid} was reused: that process started after {pidfile!r} "
                "was written"
            )
    return None


def locate(pidfile: str | None, pid: int | None, missing_ok: bool) -> Target:
    """Validate that exactly one of `pidfile`/`pid` is given and find its process.

    A missing pidfile raises unless `missing_ok`; a pidfile that does not hold a
    pid always raises.
    """
    if (pidfile is None) == (pid is None):
        raise ActivityFailed("give exactly one of the arguments 'pidfile' or 'pid'")
    _require_proc()
    if pid is not None:
        number = _check_pid("pid", pid)
        return Target(number, None, _why_not_running(number, None))
    path = require_path("pidfile", pidfile, must_exist=not missing_ok)
    number = _read_pidfile(path)
    if number is None:
        return Target(None, path, f"pidfile {path!r} does not exist")
    return Target(number, path, _why_not_running(number, path))


def parse_signal(value: Any) -> signals.Signals:
    """Return the signal named `value` (SIGTERM, TERM or sigterm)."""
    name = value.strip().upper() if isinstance(value, str) else ""
    if name and not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signals.Signals[name]
    except KeyError:
        raise ActivityFailed(
            "argument 'signal' must be a signal name such as SIGTERM, SIGKILL, "
            f"SIGSTOP or SIGCONT, got {value!r}"
        )


def send_signal(target: Target, signal: signals.Signals) -> str | None:
    """Send `signal`; return why it could not be sent because the process is gone.

    Raises ActivityFailed, before any signal, if the guard refuses the target.
    """
    _guard.refuse_unsafe(target.pid, target.pidfile)
    try:
        os.kill(target.pid, signal)
    except ProcessLookupError:
        return f"process {target.pid} is not running"
    except PermissionError as error:
        raise ActivityFailed(f"not allowed to signal process {target.pid}: {error}")
    return None


def wait_until_gone(target: Target, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the process to exit; return whether it did."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL_SECONDS) + 2):
        _reap_if_child(target.pid)
        if proc_state(target.pid) in (None, "Z", "X"):
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    return False


def wait_for_state(pid: int, stopped: bool, timeout: float = 1.0) -> bool:
    """Wait until the process is (or is no longer) stopped by SIGSTOP."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL_SECONDS) + 2):
        state = proc_state(pid)
        if state is None or (state in ("T", "t")) == stopped:
            return state is not None
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    return False


def _snapshot(pid: int) -> dict[str, Any]:
    """Read argv, cwd, environment and stdout log file of `pid` from /proc."""
    folder = os.path.join(PROC, str(pid))
    with open(os.path.join(folder, "cmdline"), "rb") as handle:
        argv = [
            part.decode(errors="surrogateescape") for part in handle.read().split(b"\0")
        ]
    with open(os.path.join(folder, "environ"), "rb") as handle:
        pairs = [
            item.decode(errors="surrogateescape") for item in handle.read().split(b"\0")
        ]
    argv = argv[:-1] if argv and argv[-1] == "" else argv
    if not argv:
        raise ActivityFailed(f"process {pid} has no command line (kernel thread?)")
    log = os.readlink(os.path.join(folder, "fd", "1"))
    return {
        "argv": argv,
        "cwd": os.readlink(os.path.join(folder, "cwd")),
        "env": dict(pair.split("=", 1) for pair in pairs if "=" in pair),
        "log": log if log.startswith("/") and os.path.isfile(log) else None,
        "inherit_env": False,
    }


def record_command(target: Target) -> str | None:
    """Write ``<pidfile>.cmd.json`` from /proc unless it exists; return its path.

    The file holds the full environment (mode 0600) and ``"inherit_env": false``
    so a restart does not mix in the environment of the restarting process.
    A target the guard refuses raises ActivityFailed before anything is written.
    """
    _guard.refuse_unsafe(target.pid, target.pidfile)
    if not target.pidfile:
        return None
    path = command_file(target.pidfile)
    if os.path.exists(path):
        return path
    try:
        snapshot = _snapshot(target.pid)
    except FileNotFoundError:
        return None  # it exited meanwhile: nothing to record, nothing to kill
    except OSError as error:
        raise ActivityFailed(
            f"cannot record how to restart process {target.pid} in {path!r} "
            f"({error}); refusing to apply the fault"
        )
    if not _runnable(snapshot):
        logger.warning(
            "process %s rewrote its command line to %r: not recording it; "
            "restarting it needs an explicit 'command'",
            target.pid,
            redact_argv(snapshot["argv"]),
        )
        return None
    _proc.write_json(path, snapshot)
    return path


def _runnable(snapshot: dict[str, Any]) -> bool:
    """Tell whether argv[0] names an executable (a process title may replace it)."""
    program = snapshot["argv"][0]
    if "/" in program:
        return os.access(os.path.join(snapshot["cwd"], program), os.X_OK)
    return (
        shutil.which(program, path=snapshot["env"].get("PATH", os.defpath)) is not None
    )


def load_command(pidfile: str) -> dict[str, Any]:
    """Return the start command recorded beside `pidfile`."""
    path = command_file(pidfile)
    try:
        return _proc.load_command(pidfile)
    except FileNotFoundError:
        raise ActivityFailed(
            f"argument 'command' is required: no start command is recorded in {path!r}"
        )
    except (OSError, ValueError) as error:
        raise ActivityFailed(f"cannot read the recorded command {path!r}: {error}")


def spawn(argv: list[str], cwd: str | None, env: dict[str, str], log: str) -> int:
    """Start `argv` detached (own session, no stdin, output appended to `log`)."""
    try:
        return _proc.spawn(argv, cwd, env, log)
    except OSError as error:
        raise ActivityFailed(f"cannot start {argv[0]!r} (log {log!r}): {error}")


def exit_code(pid: int) -> int | None:
    """Return the exit code of a process started by `spawn`, if it has exited."""
    child = _proc.spawned(pid)
    return child.poll() if child is not None else None


def describe(target: Target) -> dict[str, Any]:
    """Return what /proc says about the target, JSON-friendly."""
    info: dict[str, Any] = {
        "pid": target.pid,
        "pidfile": target.pidfile,
        "running": target.alive,
    }
    if not target.alive:
        info["reason"] = target.reason
        return info
    fields = _stat_fields(target.pid) or []
    started = _started_at(target.pid)
    folder = os.path.join(PROC, str(target.pid))
    try:
        with open(os.path.join(folder, "cmdline"), "rb") as handle:
            info["argv"] = [
                part.decode(errors="replace") for part in handle.read().split(b"\0")
            ][:-1]
    except OSError:
        info["argv"] = None
    state = fields[0] if fields else "?"
    info.update(
        state=STATE_NAMES.get(state, state),
        paused=state in ("T", "t"),
        started_at=started,
        uptime_seconds=round(time.time() - started, 3) if started else None,
        threads=int(fields[17]) if len(fields) > 17 else None,
        rss_bytes=int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        if len(fields) > 21
        else None,
    )
    return info
