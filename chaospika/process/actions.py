"""Process faults: kill, pause, resume, start and restart a process named by pidfile.

A process is named by its pidfile (or pid), never by a name pattern. Before a kill,
the way to start the process again is recorded in ``<pidfile>.cmd.json``, which
`start_process` uses when no `command` is given.
"""

import logging
import os
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika._validate import require_duration, require_path
from chaospika.process import _pidfile
from chaospika.process._pidfile import Target

__all__ = [
    "kill_process",
    "pause_process",
    "restart_process",
    "resume_process",
    "start_process",
]

logger = logging.getLogger("chaostoolkit")
# Signals whose default action ends the process: the kill waits for the exit.
TERMINATING = {"SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT"}


def kill_process(
    pidfile: str = None,
    pid: int = None,
    signal: str = "SIGKILL",
    timeout: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Send `signal` (default SIGKILL) to the process of `pidfile` or `pid`.

    Exactly one of `pidfile`/`pid`. With a pidfile, ``<pidfile>.cmd.json`` is
    written first (unless it exists) so `start_process` can restart the process.
    For SIGKILL/SIGTERM/SIGINT/SIGQUIT it waits up to `timeout` (seconds or "500ms") for the exit.
    A process that is already gone is not an error: ``killed`` is false.
    """
    chosen = _pidfile.parse_signal(signal)
    wait = require_duration("timeout", timeout, maximum=600)
    target = _pidfile.locate(pidfile, pid, missing_ok=False)
    result = {"pid": target.pid, "pidfile": target.pidfile, "signal": chosen.name}
    if not target.alive:
        return {**result, "killed": False, "exited": True, "reason": target.reason}
    recorded = _pidfile.record_command(target)
    gone = _pidfile.send_signal(target, chosen)
    if gone:
        return {**result, "killed": False, "exited": True, "reason": gone}
    logger.info("sent %s to process %s (%s)", chosen.name, target.pid, target.pidfile)
    if chosen.name in TERMINATING:
        exited = _pidfile.wait_until_gone(target, wait)
    else:
        exited = _pidfile.wait_until_gone(target, 0)
    return {**result, "killed": True, "exited": exited, "recorded": recorded}


def _argv(command: Any) -> list[str]:
    if not isinstance(command, list) or not command:
        raise ActivityFailed(
            f"argument 'command' must be a non-empty list of strings, got {command!r}"
        )
    for part in command:
        if not isinstance(part, (str, int, float)) or isinstance(part, bool):
            raise ActivityFailed(
                f"argument 'command' must hold only strings, got {part!r}"
            )
    return [str(part) for part in command]


def _environment(env: Any, name: str = "env") -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict) or not all(
        isinstance(key, str) and key and "=" not in key for key in env
    ):
        raise ActivityFailed(
            f"argument '{name}' must map variable names to values, got {env!r}"
        )
    return {key: str(value) for key, value in env.items()}


def _start_spec(
    pidfile: str,
    command: list | None,
    cwd: str | None,
    env: dict | None,
    log_file: str | None,
) -> dict:
    """Merge the explicit arguments over the command recorded beside the pidfile."""
    recorded = _pidfile.load_command(pidfile) if command is None else {}
    argv = _argv(command if command is not None else recorded["argv"])
    base = os.environ if recorded.get("inherit_env", True) else {}
    environment = {
        **base,
        **_environment(recorded.get("env"), "env (recorded)"),
        **_environment(env),
    }
    folder = cwd if cwd is not None else recorded.get("cwd")
    if folder is not None:
        folder = require_path("cwd", folder)
        if not os.path.isdir(folder):
            raise ActivityFailed(f"argument 'cwd' must be a folder, got {folder!r}")
    log = log_file if log_file is not None else recorded.get("log")
    log = require_path("log_file", log, must_exist=False) if log else os.devnull
    return {"argv": argv, "cwd": folder, "env": environment, "log": log}


def start_process(
    pidfile: str,
    command: list = None,
    cwd: str = None,
    env: dict = None,
    log_file: str = None,
    timeout: float = 0.5,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Start the process of `pidfile` unless it is running; write its new pid there.

    Without `command`, starts the argv/cwd/env/log recorded in ``<pidfile>.cmd.json``
    (`cwd`, `env`, `log_file` override them; env is merged over this process's
    environment). The process is detached (own session, stdin from /dev/null,
    output appended to the log). Fails with the log tail if it is not alive after
    `timeout` (seconds or "500ms").
    """
    path = require_path("pidfile", pidfile, must_exist=False)
    wait = require_duration("timeout", timeout, maximum=600)
    target = _pidfile.locate(path, None, missing_ok=True)
    if target.alive:
        return {"started": False, "already_running": True, "pid": target.pid}
    spec = _start_spec(path, command, cwd, env, log_file)
    new_pid = _pidfile.spawn(spec["argv"], spec["cwd"], spec["env"], spec["log"])
    _pidfile.write_pidfile(path, new_pid)
    if command is not None:
        explicit = {**spec, "env": _environment(env), "inherit_env": True}
        _pidfile.store_command(path, explicit)
    logger.info("started process %s from %s: %s", new_pid, path, spec["argv"])
    started = Target(new_pid, path)
    if _pidfile.wait_until_gone(started, wait):
        code = _pidfile.exit_code(new_pid)
        tail = _pidfile.log_tail(spec["log"]) or "(no log output)"
        raise ActivityFailed(
            f"process {spec['argv']} exited with code {code} within {wait:g} s of "
            f"starting; log {spec['log']!r} ends with:\n{tail}"
        )
    return {
        "started": True,
        "already_running": False,
        "pid": new_pid,
        "pidfile": path,
        "argv": spec["argv"],
        "log": spec["log"],
    }


def restart_process(
    pidfile: str,
    signal: str = "SIGTERM",
    stop_timeout: float = 10.0,
    command: list = None,
    cwd: str = None,
    env: dict = None,
    log_file: str = None,
    timeout: float = 0.5,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Stop the process of `pidfile` with `signal` and start it again.

    Waits `stop_timeout` (seconds or "10s") for the exit, then sends SIGKILL. A process that
    is not running is simply started. The start is as in `start_process`.
    """
    path = require_path("pidfile", pidfile, must_exist=False)
    _pidfile.parse_signal(signal)
    stop_wait = require_duration("stop_timeout", stop_timeout, maximum=600)
    require_duration("timeout", timeout, maximum=600)
    stopped = {"pid": None, "killed": False, "exited": True}
    if os.path.exists(path):
        stopped = kill_process(path, signal=signal, timeout=stop_wait)
    escalated = stopped["killed"] and not stopped["exited"]
    if escalated:
        logger.warning("process %s ignored %s: sending SIGKILL", stopped["pid"], signal)
        if not kill_process(path, signal="SIGKILL", timeout=5.0)["exited"]:
            raise ActivityFailed(f"process {stopped['pid']} survived SIGKILL")
    started = start_process(path, command, cwd, env, log_file, timeout)
    return {
        "previous_pid": stopped["pid"] if stopped["killed"] else None,
        "escalated_to_sigkill": escalated,
        **started,
    }


def pause_process(
    pidfile: str = None,
    pid: int = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Freeze the process of `pidfile` or `pid` with SIGSTOP (undo: resume_process).

    Safe to call twice. A process that is not running is not an error.
    """
    return _freeze_or_thaw(pidfile, pid, freeze=True)


def resume_process(
    pidfile: str = None,
    pid: int = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Continue a process frozen by pause_process (SIGCONT). Safe to call twice.

    A missing pidfile or a process that is gone is not an error for this undo.
    """
    return _freeze_or_thaw(pidfile, pid, freeze=False)


def _freeze_or_thaw(pidfile: str | None, pid: int | None, freeze: bool) -> dict:
    """SIGSTOP (`freeze`) or SIGCONT the process; only the freeze needs it to exist."""
    done = "paused" if freeze else "resumed"
    target = _pidfile.locate(pidfile, pid, missing_ok=not freeze)
    if not target.alive:
        return {"pid": target.pid, done: False, "reason": target.reason}
    was_paused = _pidfile.proc_state(target.pid) in ("T", "t")
    signal = _pidfile.parse_signal("SIGSTOP" if freeze else "SIGCONT")
    gone = _pidfile.send_signal(target, signal)
    if gone:
        return {"pid": target.pid, done: False, "reason": gone}
    changed = _pidfile.wait_for_state(target.pid, stopped=freeze)
    logger.info("%s process %s", done, target.pid)
    return {"pid": target.pid, done: changed, "was_paused": was_paused}
