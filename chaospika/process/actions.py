"""Process faults: kill, pause, resume, start and restart a process named by pidfile.

A process is named by its pidfile (or pid), never by a name pattern. Before a kill,
the way to start the process again is recorded in ``<pidfile>.cmd.json``, which
`start_process` uses when no `command` is given. Every kill and pause goes through
the fault ledger first; their undos, `undo_kill` and `undo_pause`, sit beside them
(called by the ledger, not activities) and are safe to run twice.
"""

import logging
import os
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika import ledger
from chaospika._secrets import redact_argv, redact_text
from chaospika._validate import require_duration, require_path
from chaospika.ledger import watchdog
from chaospika.process import _guard, _pidfile
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
    ttl: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Send `signal` (default SIGKILL) to the process of `pidfile` or `pid`.

    Exactly one of `pidfile`/`pid`. With a pidfile, ``<pidfile>.cmd.json`` is
    written first (unless it exists) and the kill is recorded in the fault ledger
    with its undo (start the process again from that record); a kill by `pid`
    alone cannot be undone. For SIGKILL/SIGTERM/SIGINT/SIGQUIT it waits up to
    `timeout` (seconds or "500ms") for the exit. With `ttl` (seconds or "5m") a
    detached watchdog restarts the process when the ttl has passed and no Chaos
    Toolkit process is left to do it. A process already gone is not an error:
    ``killed`` is false.
    """
    chosen = _pidfile.parse_signal(signal)
    wait = require_duration("timeout", timeout, maximum=600)
    life = None if ttl is None else require_duration("ttl", ttl, allow_equal=False)
    target = _pidfile.locate(pidfile, pid, missing_ok=False)
    result = {"pid": target.pid, "pidfile": target.pidfile, "signal": chosen.name}
    if not target.alive:
        return {**result, "killed": False, "exited": True, "reason": target.reason}
    recorded = _pidfile.record_command(target)
    undo = None
    if target.pidfile and recorded:
        undo = {
            "module": __name__,
            "func": "undo_kill",
            "args": {"pidfile": target.pidfile},
        }
    fault = ledger.record("process.kill", dict(result), undo, ttl=life)
    if life is not None:
        watchdog.arm(fault)
    gone = _pidfile.send_signal(target, chosen)
    if gone:
        ledger.resolve("process.kill", {"pid": target.pid}, "already gone")
        return {**result, "killed": False, "exited": True, "reason": gone}
    logger.info("sent %s to process %s (%s)", chosen.name, target.pid, target.pidfile)
    if chosen.name in TERMINATING:
        exited = _pidfile.wait_until_gone(target, wait)
    else:
        exited = _pidfile.wait_until_gone(target, 0)
    ledger.applied(fault, exited=exited)
    return {
        **result,
        "killed": True,
        "exited": exited,
        "recorded": recorded,
        "fault": fault.id,
        "undoable": undo is not None,
    }


def undo_kill(pidfile: str) -> dict:
    """Ledger undo of a kill: start the process of `pidfile` unless it runs again.

    A pidfile removed since the kill means the service was stopped on purpose
    (`sandbox down`, say): nothing is started then.
    """
    path = require_path("pidfile", pidfile, must_exist=False)
    if not os.path.exists(path):
        return {"started": False, "reason": f"pidfile {path!r} was removed"}
    return _start(path, None, None, None, None, 0.5)


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
    started = _start(path, command, cwd, env, log_file, timeout)
    ledger.resolve("process.kill", {"pidfile": path}, "start_process")
    return started


def _start(
    path: str,
    command: list | None,
    cwd: str | None,
    env: dict | None,
    log_file: str | None,
    timeout: Any,
) -> dict:
    """Start the process of the pidfile `path` unless it runs (see start_process)."""
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
    shown = redact_argv(spec["argv"])
    logger.info("started process %s from %s: %s", new_pid, path, shown)
    started = Target(new_pid, path)
    if _pidfile.wait_until_gone(started, wait):
        code = _pidfile.exit_code(new_pid)
        tail = redact_text(_pidfile.log_tail(spec["log"]) or "(no log output)")
        raise ActivityFailed(
            f"process {shown} exited with code {code} within {wait:g} s of "
            f"starting; log {spec['log']!r} ends with:\n{tail}"
        )
    return {
        "started": True,
        "already_running": False,
        "pid": new_pid,
        "pidfile": path,
        "argv": shown,
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
    ttl: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Freeze the process of `pidfile` or `pid` with SIGSTOP (undo: resume_process).

    Recorded in the fault ledger first. With `ttl` (seconds or "5m") a detached
    watchdog resumes it when the ttl has passed and no Chaos Toolkit process is
    left to do it. Safe to call twice. A process that is not running is not an
    error.
    """
    life = None if ttl is None else require_duration("ttl", ttl, allow_equal=False)
    target = _pidfile.locate(pidfile, pid, missing_ok=False)
    fault = None
    if target.alive and _pidfile.proc_state(target.pid) not in ("T", "t"):
        _guard.refuse_unsafe(target.pid, target.pidfile)
        start = ledger.records.process_start(target.pid)
        undo = {
            "module": __name__,
            "func": "undo_pause",
            "args": {"pid": target.pid, "start": start},
        }
        where = {"pid": target.pid, "pidfile": target.pidfile, "start": start}
        fault = ledger.record("process.pause", where, undo, ttl=life)
        if life is not None:
            watchdog.arm(fault)
    result = _freeze_or_thaw(pidfile, pid, freeze=True)
    if fault is not None:
        if result.get("paused"):
            ledger.applied(fault)
            result["fault"] = fault.id
        else:
            ledger.resolve("process.pause", {"pid": target.pid}, "not paused")
    return result


def undo_pause(pid: int, start: int | None) -> dict:
    """Ledger undo of a pause: SIGCONT `pid` if it is still that process."""
    if start is None or ledger.records.process_start(pid) != start:
        return {"pid": pid, "resumed": False, "reason": "the process is gone"}
    result = _freeze_or_thaw(None, pid, freeze=False)
    if _pidfile.proc_state(pid) in ("T", "t"):
        raise ActivityFailed(f"process {pid} is still stopped after SIGCONT")
    return result


def resume_process(
    pidfile: str = None,
    pid: int = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Continue a process frozen by pause_process (SIGCONT). Safe to call twice.

    A missing pidfile or a process that is gone is not an error for this undo.
    """
    result = _freeze_or_thaw(pidfile, pid, freeze=False)
    if result.get("pid") is not None:
        ledger.resolve("process.pause", {"pid": result["pid"]}, "resume_process")
    return result


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
