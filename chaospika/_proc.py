"""Process primitives shared by the process activities and the sandbox manager.

A pidfile holds one pid. Beside it, ``<pidfile>.cmd.json`` records how to start
the process again: ``argv`` (non-empty list of strings), ``cwd``, ``env``,
``log`` and ``inherit_env`` (false: ``env`` is the whole environment; true or
absent: ``env`` is laid over the environment of whoever starts it).

Failures are plain OSError/ValueError; each caller turns them into its own error.
"""

import json
import os
import subprocess
from typing import Any

__all__ = [
    "command_file",
    "forget_exited",
    "load_command",
    "log_tail",
    "read_pid",
    "spawn",
    "spawned",
    "start_environment",
    "store_command",
    "write_json",
    "write_pidfile",
]

# Processes started by `spawn`, kept so that they are reaped once they exit.
_children: dict[int, subprocess.Popen] = {}


def command_file(pidfile: str) -> str:
    """Return the path of the start-command record of `pidfile`."""
    return pidfile + ".cmd.json"


def read_pid(path: str) -> int | None:
    """Return the pid in pidfile `path`, None if the file does not exist.

    Raises OSError if it cannot be read, ValueError if it does not hold a pid.
    """
    try:
        with open(path) as handle:
            content = handle.read(64).strip()
    except FileNotFoundError:
        return None
    if not content.isdigit():
        raise ValueError(f"{path!r} must hold a pid, got {content!r}")
    return int(content)


def _replace(path: str, text: str, mode: int) -> None:
    """Write `text` to `path` atomically (a temporary file renamed over it)."""
    partial = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


def write_pidfile(path: str, pid: int) -> None:
    """Write `pid` to `path` atomically, creating its folder if needed."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    _replace(path, f"{pid}\n", 0o644)


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write `data` as JSON to `path` atomically, readable by this user only."""
    _replace(path, json.dumps(data, indent=2), 0o600)


def store_command(pidfile: str, command: dict[str, Any]) -> str:
    """Write `command` as the start-command record of `pidfile`; return its path."""
    path = command_file(pidfile)
    write_json(path, command)
    return path


def load_command(pidfile: str) -> dict[str, Any]:
    """Return the start-command record of `pidfile`.

    Raises FileNotFoundError if there is none, OSError if it cannot be read and
    ValueError if it is not JSON with a non-empty 'argv' list of strings.
    """
    with open(command_file(pidfile)) as handle:
        command = json.load(handle)
    argv = command.get("argv") if isinstance(command, dict) else None
    if (
        not isinstance(argv, list)
        or not argv
        or not all(isinstance(part, str) for part in argv)
    ):
        raise ValueError("it must hold a non-empty 'argv' list of strings")
    return command


def start_environment(command: dict[str, Any]) -> dict[str, str]:
    """Return the environment to start a recorded `command` with."""
    base = os.environ if command.get("inherit_env", True) else {}
    return {**base, **(command.get("env") or {})}


def spawn(argv: list[str], cwd: str | None, env: dict[str, str], log: str) -> int:
    """Start `argv` detached (own session, no stdin, output appended to `log`).

    Returns the pid; raises OSError if the log or the program cannot be opened.
    """
    with open(log, "ab") as output:
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[child.pid] = child
    return child.pid


def spawned(pid: int) -> subprocess.Popen | None:
    """Return the Popen of `pid` if `spawn` started it (its poll() reaps it)."""
    return _children.get(pid)


def forget_exited(pid: int) -> None:
    """Stop tracking a spawned `pid` once it has exited: its pid may be reused."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def log_tail(path: str | None, limit: int = 2000) -> str:
    """Return the last `limit` characters of a log file ('' if unreadable)."""
    if not path or path == os.devnull:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""
