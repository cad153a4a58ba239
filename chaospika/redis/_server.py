"""Stop a Redis server, and start it again (the undo).

A stop needs a way back, named by one of these targets:

* ``pidfile``: a server whose pid is in the pidfile and whose start command is in
  ``<pidfile>.cmd.json`` (the sandbox writes both; otherwise the command is
  recorded from /proc before the stop, as `kill_process` does). The server at
  `redis_url` must be that process (INFO ``process_id``), else the stop is
  refused. Started again by chaospika.process from the recorded command, the
  pidfile rewritten.
* ``start_command`` (and, to stop by a command, ``stop_command``): argv lists
  from the configuration, say a service manager's. The start command is started
  detached: it may daemonize or stay in the foreground.
* ``container``: the exact name of the Docker container the server runs in
  (the sandbox's is ``chaospika-sandbox-redis-<port>``), on the engine at
  ``docker_url`` (a unix socket or loopback TCP only, as chaospika.docker
  checks). The container must be running and the server at `redis_url` must be
  its: when the container's processes can be read from /proc, INFO
  ``process_id`` must be one of them (else the stop is refused), and after the
  stop `redis_url` must not answer (else the stop fails, recorded, and its undo
  starts the container again). Stopped by the engine; started again by it.
  Excludes `pidfile`, `start_command` and `stop_command`.

Ways to stop (`how`): ``shutdown`` (SHUTDOWN NOSAVE, or SAVE with `save`),
``sigterm`` / ``sigkill`` (needs the pidfile), ``command`` (the stop command);
for a container ``stop`` (`docker stop`: SIGTERM, SIGKILL after `timeout`; the
default) or ``kill`` (`docker kill`: SIGKILL).
The undo, `undo_stop`, starts the server (or its container) unless it answers
PING and waits until it does. A server without persistence comes back empty (that is the fault);
`flush_keys` is the fault that puts data back.
"""

import logging
import math
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets

from chaospika import ledger
from chaospika._secrets import redact_argv, redact_text
from chaospika._validate import require_choice, require_duration, require_path
from chaospika.ledger import store, watchdog
from chaospika.process import _pidfile
from chaospika.process import actions as process_actions
from chaospika.redis import _conn

__all__ = ["HOWS", "start", "stop", "undo_stop"]

logger = logging.getLogger("chaostoolkit")

KIND = "redis.stop"
HOWS = ("shutdown", "sigterm", "sigkill", "command", "stop", "kill")
CONTAINER_HOWS = ("stop", "kill")
# An undo that may overlap a container stop still running in the engine waits
# this much longer than the stop's own timeout for it to end.
STOP_SLACK_SECONDS = 5.0
POLL_SECONDS = 0.05


@dataclass
class _Target:
    """Where the server is and how it comes back."""

    pidfile: str | None
    start_command: list[str] | None
    stop_command: list[str] | None
    container: str | None = None
    docker_url: str | None = None


def _argv(name: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ActivityFailed(
            f"argument '{name}' must be a non-empty list of strings, got {value!r}"
        )
    if not all(isinstance(part, str | int | float) for part in value):
        raise ActivityFailed(f"argument '{name}' must hold only strings, got {value!r}")
    return [str(part) for part in value]


def _target(
    pidfile: Any,
    start_command: Any,
    stop_command: Any,
    container: Any = None,
    docker_url: Any = None,
) -> _Target:
    if container is not None:
        if not isinstance(container, str) or not container.strip():
            raise ActivityFailed(
                f"argument 'container' must be a container's name, got {container!r}"
            )
        given = [
            name
            for name, value in (
                ("pidfile", pidfile),
                ("start_command", start_command),
                ("stop_command", stop_command),
            )
            if value is not None
        ]
        if given:
            raise ActivityFailed(
                f"give 'container' or {' / '.join(repr(g) for g in given)}, not both: "
                "exactly one target names the way back"
            )
        from chaospika.docker import _engine

        return _Target(
            None, None, None, container.strip(), _engine.docker_url(docker_url)
        )
    if docker_url is not None:
        raise ActivityFailed("argument 'docker_url' needs 'container'")
    path = None if pidfile is None else require_path("pidfile", pidfile, False)
    start_argv = _argv("start_command", start_command)
    if path is None and start_argv is None:
        raise ActivityFailed(
            "give 'pidfile' (a server started from a recorded command) or "
            "'start_command' (an argv list) or 'container' (its name): without one "
            "the server could not be started again"
        )
    return _Target(path, start_argv, _argv("stop_command", stop_command))


def _probe(redis_url: str, timeout: float = 1.0) -> str:
    """ "up" (answers PING), "down" (connection refused / no server) or "silent"."""
    client = _conn.open_client(redis_url, timeout=timeout)
    try:
        client.ping()
        return "up"
    except (redis.exceptions.BusyLoadingError, redis.exceptions.TimeoutError):
        return "silent"
    except redis.exceptions.AuthenticationError:
        return "up"  # a server answered, if only to refuse
    except redis.exceptions.ConnectionError:
        return "down"
    except redis.exceptions.RedisError:
        return "up"
    finally:
        client.close()


def _wait_for(redis_url: str, state: str, timeout: float) -> bool:
    """Poll until `_probe` says `state` (at most `timeout`); return whether it did."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL_SECONDS) + 2):
        if _probe(redis_url, min(1.0, max(0.1, timeout))) == state:
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    return False


def _server_pid(redis_url: str, secrets: Secrets) -> int | None:
    """The pid of the server at `redis_url`, None if nothing listens there."""
    if _probe(_conn.undo_url(redis_url, secrets)) == "down":
        return None
    with _conn.connected(redis_url, secrets=secrets, timeout=5.0) as client:
        return int(client.info("server")["process_id"])


def stop(
    redis_url: str,
    pidfile: Any,
    start_command: Any,
    stop_command: Any,
    how: Any,
    save: Any,
    timeout: Any,
    ttl: Any,
    secrets: Secrets = None,
    container: Any = None,
    docker_url: Any = None,
) -> dict[str, Any]:
    """Stop the server at `redis_url`, recorded first with its way back."""
    target = _target(pidfile, start_command, stop_command, container, docker_url)
    if target.container is not None:
        chosen = require_choice("how", how or "stop", CONTAINER_HOWS)
    else:
        default = "command" if target.stop_command else "shutdown"
        chosen = require_choice("how", how or default, HOWS[:4])
    if chosen in ("sigterm", "sigkill") and target.pidfile is None:
        raise ActivityFailed(f"how={chosen!r} needs the server's 'pidfile'")
    if chosen == "command" and target.stop_command is None:
        raise ActivityFailed("how='command' needs 'stop_command'")
    if not isinstance(save, bool):
        raise ActivityFailed(f"argument 'save' must be true or false, got {save!r}")
    wait = require_duration("timeout", timeout, allow_equal=False, maximum=600)
    life = None if ttl is None else require_duration("ttl", ttl, allow_equal=False)
    started = time.monotonic()
    pid = _server_pid(redis_url, secrets)
    if pid is None:
        return {"stopped": False, "how": chosen, "reason": "no server listens there"}
    if target.container is not None:
        return _stop_container(redis_url, target, chosen, pid, wait, life, secrets)
    process = None
    if target.pidfile is not None:
        process = _pidfile.locate(target.pidfile, None, missing_ok=False)
        if not process.alive or process.pid != pid:
            raise ActivityFailed(
                f"argument 'pidfile': {target.pidfile!r} names "
                f"{process.reason or f'pid {process.pid}'}, but the Redis at "
                f"{_conn.describe(redis_url)['url']} runs as pid {pid}; refusing"
            )
        recorded = _pidfile.record_command(process)
        if recorded is None and target.start_command is None:
            raise ActivityFailed(
                f"cannot record how to start pid {pid} again; give 'start_command'"
            )
    undo = {
        "module": __name__,
        "func": "undo_stop",
        "args": {
            "redis_url": _conn.undo_url(redis_url, secrets),
            "pidfile": target.pidfile,
            "start_command": target.start_command,
            "timeout": wait,
        },
    }
    where = _conn.describe(redis_url, pidfile=target.pidfile, pid=pid, how=chosen)
    fault = ledger.record(KIND, where, undo, ttl=life)
    if life is not None:
        watchdog.arm(fault)
    _stop_by(chosen, redis_url, process, target, save, wait, secrets)
    if process is not None:
        down = _pidfile.wait_until_gone(process, wait)
        if not os.path.exists(target.pidfile):  # the server removed its own pidfile
            _pidfile.write_pidfile(target.pidfile, pid)  # a stop is not a removal
    else:
        down = _wait_for(redis_url, "down", wait)
    ledger.applied(fault, stopped=down)
    logger.info("stopped Redis %s (pid %s) by %s", where["url"], pid, chosen)
    return {
        "fault": fault.id,
        "stopped": down,
        "how": chosen,
        "pid": pid,
        "stop_seconds": round(time.monotonic() - started, 3),
        "undo": "start_server (or the ledger): start it again, wait for PING",
    }


def _container_pids(client: Any, cid: str) -> set[int] | None:
    """The pids (in their own namespace and on the host) of the container's
    processes; None when the host's /proc does not show them (engine in a VM)."""
    listing = client.top(cid, ps_args="-o pid")
    host = {int(row[0]) for row in listing.get("Processes") or [] if row}
    pids, seen = set(host), False
    for each in host:
        try:
            with open(f"/proc/{each}/status") as status:
                for line in status:
                    if line.startswith("NSpid:"):
                        pids.update(int(part) for part in line.split()[1:])
                        seen = True
        except (OSError, ValueError):
            continue
    return pids if seen else None


def _stop_container(
    redis_url: str,
    target: _Target,
    how: str,
    pid: int,
    wait: float,
    life: float | None,
    secrets: Secrets,
) -> dict[str, Any]:
    """Stop (`docker stop`) or kill the container the server at `redis_url` runs in."""
    from chaospika.docker import _engine

    started = time.monotonic()
    url, name = target.docker_url, target.container
    where = _conn.describe(redis_url, container=name, docker_url=url, pid=pid, how=how)
    with _engine.connected(url) as client:
        document = _engine.find(client, name)
        if document is None:
            raise ActivityFailed(f"argument 'container': no container {name} on {url}")
        facts = _engine.facts(document)
        if not facts["running"]:
            raise ActivityFailed(
                f"argument 'container': container {name} is {facts['status']}, but "
                f"a Redis answers at {where['url']}: it is not that container's; refusing"
            )
        cid = facts["id"]
        pids = _container_pids(client, cid)
        if pids is not None and pid not in pids:
            raise ActivityFailed(
                f"argument 'container': the Redis at {where['url']} runs as pid {pid}, "
                f"which is not a process of container {name}; refusing"
            )
        undo = {
            "module": __name__,
            "func": "undo_stop",
            "args": {
                "redis_url": _conn.undo_url(redis_url, secrets),
                "container": name,
                "docker_url": url,
                "timeout": wait,
                "since": time.time(),
            },
        }
        fault = ledger.record(KIND, {**where, "id": cid}, undo, ttl=life)
        if life is not None:
            watchdog.arm(fault)  # not while signals are held: it would inherit that
        seconds = math.ceil(wait)
        with _engine.signals_held():
            if how == "stop":
                client.stop(cid, timeout=seconds)
            else:
                client.kill(cid, signal="SIGKILL")
    down = _wait_for(redis_url, "down", wait)
    ledger.applied(fault, stopped=down)
    if not down:
        raise ActivityFailed(
            f"container {name} was {'stopped' if how == 'stop' else 'killed'} but the "
            f"Redis at {where['url']} still answers: it is not that container's "
            f"server (fault {fault.id}: its undo starts the container again)"
        )
    logger.info("stopped Redis %s (container %s) by docker %s", where["url"], name, how)
    return {
        "fault": fault.id,
        "stopped": down,
        "how": how,
        "pid": pid,
        "container": name,
        "stop_seconds": round(time.monotonic() - started, 3),
        "undo": "start_server (or the ledger): start the container, wait for PING",
    }


def _undo_container(
    redis_url: str,
    container: str,
    docker_url: str | None,
    since: float | None,
    wait: float,
) -> dict[str, Any]:
    """Start the container unless it runs (or was removed); wait for PING."""
    from chaospika.docker import _engine
    from chaospika.docker import actions as docker_actions

    began = time.monotonic()
    url = _engine.docker_url(docker_url)
    with _engine.connected(url) as client:
        document = _engine.find(client, container)
        if document is None:
            return {"started": False, "reason": f"container {container} was removed"}
        cid = _engine.facts(document)["id"]
        linger = wait + STOP_SLACK_SECONDS if since is not None else 0.0
        report = docker_actions._ensure_started(client, cid, since, linger, wait)
        if report.get("reason"):
            return {"started": False, "reason": report["reason"]}
        if not _wait_for(redis_url, "up", wait):
            tail = client.logs(cid, tail=20).decode(errors="replace")
            raise ActivityFailed(
                f"container {container} runs but its Redis does not answer PING "
                f"after {wait:g} s; its log ends with:\n{redact_text(tail)}"
            )
    logger.info("Redis answers again (container %s)", container)
    result = {"started": bool(report.get("started")), "container": container}
    if report.get("already_running"):
        result["already_running"] = True
    return {**result, "start_seconds": round(time.monotonic() - began, 3)}


def _stop_by(
    how: str,
    redis_url: str,
    process: _pidfile.Target | None,
    target: _Target,
    save: bool,
    wait: float,
    secrets: Secrets,
) -> None:
    if how == "shutdown":
        with _conn.connected(redis_url, secrets=secrets, timeout=wait) as client:
            client.shutdown(save=save, nosave=not save)
    elif how in ("sigterm", "sigkill"):
        signal = _pidfile.parse_signal(how)
        _pidfile.send_signal(process, signal)
    else:
        _run(target.stop_command, wait)


def _run(argv: list[str], wait: float) -> None:
    shown = redact_argv(argv)
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=wait,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ActivityFailed(f"stop command {shown} failed: {redact_text(error)}")
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")[-1000:]
        raise ActivityFailed(
            f"stop command {shown} exited with {done.returncode}: {redact_text(output)}"
        )


def _start_log() -> str:
    return os.path.join(store.ledger_dir(), "redis-start.log")


def undo_stop(
    redis_url: str,
    pidfile: str | None = None,
    start_command: list | None = None,
    timeout: float = 10.0,
    container: str | None = None,
    docker_url: str | None = None,
    since: float | None = None,
) -> dict[str, Any]:
    """Ledger undo of a stop: start the server unless it answers; wait for PING.

    Safe to call twice. A pidfile removed since the stop means the server was
    stopped on purpose (`sandbox down`, say): nothing is started then; so does
    a removed container. With `container`, starts that container (once a stop
    of the instance that ran at `since`, still going on in the engine, ended).
    """
    wait = require_duration("timeout", timeout, allow_equal=False, maximum=600)
    began = time.monotonic()
    state = _probe(redis_url)
    if state == "up":
        return {"started": False, "already_running": True}
    if state == "silent":
        if _wait_for(redis_url, "up", wait):
            return {"started": False, "already_running": True}
        raise ActivityFailed("the server accepts connections but does not answer PING")
    if container is not None:
        return _undo_container(redis_url, container, docker_url, since, wait)
    if pidfile is not None and not os.path.exists(pidfile):
        return {"started": False, "reason": f"pidfile {pidfile!r} was removed"}
    log = None
    if pidfile is not None:
        started = process_actions._start(pidfile, start_command, None, None, None, 0.2)
        pid, log = started.get("pid"), started.get("log")
    else:
        argv = _argv("start_command", start_command)
        log = _start_log()
        pid = _pidfile.spawn(argv, None, dict(os.environ), log)
    if not _wait_for(redis_url, "up", wait):
        tail = redact_text(_pidfile.log_tail(log) or "(no log output)")
        raise ActivityFailed(
            f"Redis started (pid {pid}) but does not answer PING after {wait:g} s; "
            f"log {log!r} ends with:\n{tail}"
        )
    logger.info("started Redis again (pid %s)", pid)
    return {
        "started": True,
        "pid": pid,
        "start_seconds": round(time.monotonic() - began, 3),
    }


def start(
    redis_url: str,
    pidfile: Any,
    start_command: Any,
    timeout: Any,
    secrets: Secrets = None,
    container: Any = None,
    docker_url: Any = None,
) -> dict[str, Any]:
    """Start the server (from the arguments, else from its stop in the ledger)."""
    url = _conn.describe(redis_url)["url"]
    if pidfile is None and start_command is None and container is None:
        stops = [
            fault
            for fault in ledger.outstanding()
            if fault.data["kind"] == KIND
            and (fault.data.get("target") or {}).get("url") == url
        ]
        if not stops:
            if _probe(_conn.undo_url(redis_url, secrets)) == "up":
                return {"started": False, "already_running": True, "faults": []}
            raise ActivityFailed(
                "give 'pidfile' or 'start_command' or 'container': no stop of this "
                "server is in the ledger to start it from"
            )
        report = ledger.undo(stops[-1].id, by="start_server")
        resolved = ledger.resolve(KIND, {"url": url}, "start_server")
        return {**report.get("result", {}), "faults": [stops[-1].id, *resolved]}
    target = _target(pidfile, start_command, None, container, docker_url)
    result = undo_stop(
        _conn.undo_url(redis_url, secrets),
        target.pidfile,
        target.start_command,
        timeout,
        target.container,
        target.docker_url,
    )
    resolved = ledger.resolve(KIND, {"url": url}, "start_server")
    return {**result, "faults": resolved}
