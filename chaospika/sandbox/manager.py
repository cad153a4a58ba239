"""Start, stop, inspect and reset the sandbox: embedded Redis, order API, worker.

Every service runs detached, with a pidfile ``<name>.pid``, a log and a start
record ``<name>.pid.cmd.json`` (argv, cwd, env, log; see chaospika._proc) in the
state folder, so it can be restarted exactly, by `up` or by the process actions
(`start_process`); ``state.json`` describes the whole sandbox.
"""

import contextlib
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from chaoslib.exceptions import ActivityFailed
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from chaospika import _proc
from chaospika._clients import expand_sqlite, sql_engine
from chaospika._ports import wait_for_port
from chaospika._secrets import redact_url
from chaospika.sandbox import schema
from chaospika.sandbox.bugs import parse_bugs
from chaospika.sandbox.redis_server import redis_command
from chaospika.sandbox.worker import consumer_name

__all__ = [
    "DEFAULT_API_PORT",
    "DEFAULT_REDIS_PORT",
    "SERVICES",
    "SandboxError",
    "down",
    "read_state",
    "reset",
    "sandbox_dir",
    "service_running",
    "start_recorded",
    "status",
    "up",
]

DEFAULT_API_PORT = 8731
DEFAULT_REDIS_PORT = 6391
SERVICES = ("redis", "api", "worker")  # start order; stop in reverse
MODULES = {"api": "chaospika.sandbox.api", "worker": "chaospika.sandbox.worker"}
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.05


class SandboxError(RuntimeError):
    """The sandbox could not be started, inspected or reset; the message says why."""


def sandbox_dir(dir: str | None = None) -> str:
    """Return the state folder: `dir`, else $CHAOSPIKA_SANDBOX_DIR, else the default."""
    chosen = dir or os.environ.get("CHAOSPIKA_SANDBOX_DIR") or "~/.chaospika/sandbox"
    return os.path.abspath(os.path.expanduser(str(chosen)))


def _path(folder: str, name: str) -> str:
    return os.path.join(folder, name)


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_state(dir: str | None = None) -> dict | None:
    """Return the sandbox's state.json as a dict, or None if there is none."""
    return _read_json(_path(sandbox_dir(dir), "state.json"))


def _read_pid(pidfile: str) -> int | None:
    """Return the pid in `pidfile`; None if missing, unreadable or not a service's."""
    try:
        pid = _proc.read_pid(pidfile)
    except (OSError, ValueError):
        return None
    return pid if pid is not None and pid > 1 and pid != os.getpid() else None


def _recorded(pidfile: str) -> dict:
    """Return the start record of `pidfile`, {} if it is missing or unusable."""
    try:
        return _proc.load_command(pidfile)
    except (OSError, ValueError):
        return {}


def _cmd_markers(cmd: dict) -> list[str]:
    """Words the command line of the service started by `cmd` must contain."""
    argv = cmd.get("argv") or []
    if not argv:
        return []
    if "-m" in argv[:-1]:
        markers = [argv[argv.index("-m") + 1]]
    else:
        markers = [os.path.basename(argv[0])]
    if "--port" in argv[:-1]:
        markers.append(argv[argv.index("--port") + 1])
    return markers


def _cmdline(pid: int) -> str | None:
    """Return the process's command line ('' for a zombie), None without /proc."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return "" if os.path.isdir("/proc") else None
    except OSError:
        return ""


def _pid_matches(pid: int, markers: list[str]) -> bool:
    """True if `pid` runs and its command line still has `markers` (pid reuse guard)."""
    child = _proc.spawned(pid)
    if child is not None:  # ours and not reaped: the pid cannot have been reused
        return child.poll() is None
    if not markers:
        return False
    command = _cmdline(pid)
    if command is None:  # no /proc: fall back to "a process has this pid"
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return bool(command) and all(marker in command for marker in markers)


def service_running(folder: str, name: str) -> tuple[int | None, bool]:
    """Return (pid from `name`.pid, whether that pid still runs this service)."""
    pidfile = _path(folder, f"{name}.pid")
    pid = _read_pid(pidfile)
    markers = _cmd_markers(_recorded(pidfile))
    return pid, pid is not None and _pid_matches(pid, markers)


def start_recorded(pidfile: str) -> int:
    """Start detached the service recorded in ``<pidfile>.cmd.json``; write `pidfile`.

    Returns the new pid.
    """
    try:
        cmd = _proc.load_command(pidfile)
        log = cmd.get("log") or os.devnull
        env = _proc.start_environment(cmd)
        pid = _proc.spawn(cmd["argv"], cmd.get("cwd") or None, env, log)
        _proc.write_pidfile(pidfile, pid)
    except (OSError, ValueError) as error:
        record = _proc.command_file(pidfile)
        raise SandboxError(f"cannot start from {record}: {error}") from error
    return pid


def _start_service(folder: str, name: str, argv: list[str], env: dict[str, str]) -> int:
    """Record how to start service `name` in ``<name>.pid.cmd.json`` and start it."""
    pidfile = _path(folder, f"{name}.pid")
    log = _path(folder, f"{name}.log")
    record = {"argv": argv, "cwd": folder, "env": env, "log": log, "inherit_env": True}
    _proc.store_command(pidfile, record)
    return start_recorded(pidfile)


def _python_env() -> dict[str, str]:
    """Environment the Python services need: unbuffered output, this package."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    return {"PYTHONUNBUFFERED": "1", "PYTHONPATH": package_root}


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _http_status(url: str, timeout: float = 1.0) -> int | None:
    """GET `url` without any proxy; return the status, None if unreachable."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
    )


@contextlib.contextmanager
def _sandbox_redis(state: dict) -> Iterator[redis.Redis]:
    """A client of the sandbox's Redis; its errors become SandboxError."""
    client = _redis(state["redis_url"])
    try:
        yield client
    except RedisError as error:
        raise SandboxError(
            f"Redis {redact_url(state['redis_url'])} unusable: {error}"
        ) from error
    finally:
        client.close()


def _worker_seen(client: redis.Redis, pid: int | None, since: float) -> bool:
    """True if the worker process `pid` read the stream after the time `since`."""
    if pid is None:
        return False
    consumer = consumer_name(pid=pid)
    try:
        consumers = client.xinfo_consumers(schema.STREAM, schema.GROUP)
    except RedisError:
        return False
    elapsed_ms = (time.time() - since) * 1000.0
    return any(
        entry["name"] == consumer and entry["idle"] < elapsed_ms for entry in consumers
    )


def _log_tail(path: str, lines: int = 15) -> str:
    """Return the last `lines` lines of a log, indented ('' if unreadable)."""
    tail = _proc.log_tail(path, limit=4000).splitlines(keepends=True)[-lines:]
    return "".join(f"    {line}" for line in tail)


def _wait_ready(
    folder: str, state: dict, names: Iterable[str], timeout: float, since: float
) -> None:
    """Wait until the services `names` (started after `since`) are up.

    Raises SandboxError with the tails of their logs if one exits or times out.
    """
    names = list(names)
    deadline = time.monotonic() + timeout
    client = _redis(state["redis_url"])
    try:
        while True:
            waiting = []
            for name in names:
                if not service_running(folder, name)[1]:
                    raise SandboxError(_failure(folder, names, f"{name} exited"))
                if name == "api":
                    ready = _http_status(state["api_url"] + "/health") == 200
                elif name == "worker":
                    pid = service_running(folder, "worker")[0]
                    ready = _worker_seen(client, pid, since)
                else:
                    ready = wait_for_port("127.0.0.1", state["redis_port"], 0.05)
                if not ready:
                    waiting.append(name)
            if not waiting:
                return
            if time.monotonic() > deadline:
                message = f"{', '.join(waiting)} not ready after {timeout:g} s"
                raise SandboxError(_failure(folder, names, message))
            time.sleep(POLL_SECONDS)
    finally:
        client.close()


def _failure(folder: str, names: list[str], message: str) -> str:
    parts = [f"sandbox failed to start: {message}"]
    for name in names:
        log = _path(folder, f"{name}.log")
        parts.append(f"  --- last lines of {log}:\n{_log_tail(log)}")
    return "\n".join(parts)


def _check_port(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise SandboxError(f"{name} must be a port between 1 and 65535, got {value!r}")
    return value


def _new_state(
    folder: str,
    bugs: tuple[str, ...],
    api_port: int,
    redis_port: int,
    redis_url: str | None,
    db_url: str | None,
    work_ms: float,
    batch: int,
) -> dict:
    """Describe a sandbox about to start (validating the options)."""
    _check_port("api_port", api_port)
    embedded = redis_url is None
    if embedded:
        _check_port("redis_port", redis_port)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
    elif not str(redis_url).startswith(("redis://", "rediss://", "unix://")):
        raise SandboxError(
            f"redis_url must be a redis:// URL, got {redact_url(redis_url)!r}"
        )
    if isinstance(work_ms, bool) or not isinstance(work_ms, int | float) or work_ms < 0:
        raise SandboxError(f"work_ms must be a number >= 0, got {work_ms!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise SandboxError(f"batch must be an integer >= 1, got {batch!r}")
    names = SERVICES if embedded else SERVICES[1:]
    pidfiles = {name: _path(folder, f"{name}.pid") for name in names}
    return {
        "dir": folder,
        "api_url": f"http://127.0.0.1:{api_port}",
        "ws_url": f"ws://127.0.0.1:{api_port}/ws",
        "redis_url": redis_url,
        "db_url": expand_sqlite(db_url or f"sqlite:///{_path(folder, 'orders.db')}"),
        "bugs": list(bugs),
        "api_port": api_port,
        "redis_port": redis_port if embedded else None,
        "redis_embedded": embedded,
        "consumer": "worker-<pid>",
        "work_ms": work_ms,
        "batch": batch,
        "pidfiles": pidfiles,
        "logs": {name: _path(folder, f"{name}.log") for name in names},
        "cmdfiles": {name: _proc.command_file(path) for name, path in pidfiles.items()},
    }


def _prepare_data(state: dict) -> None:
    """Create the stream's consumer group and the SQL tables."""
    with _sandbox_redis(state) as client:
        schema.ensure_group(client)
    _create_tables(state)


def _create_tables(state: dict, drop_first: bool = False) -> None:
    """Create the SQL tables of `state`, dropping the old ones first if asked."""
    try:
        engine = sql_engine(state["db_url"])
        if drop_first:
            schema.drop_tables(engine)
        schema.create_tables(engine, state["bugs"])
        engine.dispose()
    except (SQLAlchemyError, ActivityFailed, OSError) as error:
        raise SandboxError(
            f"database {redact_url(state['db_url'])} unusable: {error}"
        ) from error


def _service_argv(name: str, state: dict) -> list[str]:
    bugs = ",".join(state["bugs"])
    if name == "redis":
        return redis_command(state["redis_port"], state["dir"])
    common = ["--redis-url", state["redis_url"], "--db-url", state["db_url"]]
    if name == "api":
        extra = ["--port", str(state["api_port"])]
    else:
        extra = [
            "--work-ms",
            f"{state['work_ms']:g}",
            "--batch",
            str(state["batch"]),
        ]
    return [sys.executable, "-m", MODULES[name], *common, *extra, "--bugs", bugs]


def _restart_stopped(folder: str, state: dict, timeout: float) -> list[str]:
    """Start again, from their records, the services of `state` that are not running."""
    stopped = [
        name
        for name in SERVICES
        if name in state["pidfiles"] and not service_running(folder, name)[1]
    ]
    since = time.time()
    try:
        for name in stopped:
            start_recorded(state["pidfiles"][name])
            if name == "redis":
                wait_for_port("127.0.0.1", state["redis_port"], 10.0)
                _prepare_data(state)
        _wait_ready(folder, state, stopped, timeout, since)
    except BaseException:
        _stop_services(folder, stopped)
        raise
    return stopped


def up(
    dir: str | None = None,
    bugs: str | Iterable[str] | None = (),
    api_port: int = DEFAULT_API_PORT,
    redis_port: int = DEFAULT_REDIS_PORT,
    redis_url: str | None = None,
    db_url: str | None = None,
    work_ms: float = 5,
    batch: int = 20,
    timeout: float = 30.0,
    reset: bool = False,
) -> dict:
    """Start the sandbox in `dir` (see sandbox_dir) and return its state.

    On a running sandbox nothing changes and the state comes back with
    ``already_running`` True; on a partly running one the stopped services are
    restarted from their start records (``restarted`` lists them).

    Data left by an earlier sandbox cannot agree with a new one (the embedded
    Redis starts empty): the sandbox's own SQLite file is wiped on start
    (``wiped`` True); orders in an external database or Redis make `up` refuse
    unless `reset` is given, which deletes the sandbox's keys and tables first.
    """
    folder = sandbox_dir(dir)
    try:
        bugs = parse_bugs(bugs)
    except ValueError as error:
        raise SandboxError(str(error)) from error
    old = read_state(folder)
    if old and any(service_running(folder, name)[1] for name in old["pidfiles"]):
        restarted = _restart_stopped(folder, old, timeout)
        return {**old, "already_running": not restarted, "restarted": restarted}
    state = _new_state(
        folder, bugs, api_port, redis_port, redis_url, db_url, work_ms, batch
    )
    os.makedirs(folder, mode=0o700, exist_ok=True)
    busy = [
        port
        for port in (state["api_port"], state["redis_port"])
        if port and not _port_free(port)
    ]
    if busy:
        raise SandboxError(
            f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use; "
            "pass other --api-port/--redis-port (or --redis-url)"
        )
    names = list(state["pidfiles"])
    since = time.time()
    wiped = False
    try:
        if state["redis_embedded"]:
            _start_service(folder, "redis", _service_argv("redis", state), {})
            _wait_ready(folder, state, ["redis"], min(timeout, 10.0), since)
        wiped = _clear_stale_data(state, reset)
        _prepare_data(state)
        for name in ("api", "worker"):
            _start_service(folder, name, _service_argv(name, state), _python_env())
        state["started_at"] = time.time()
        _proc.write_json(_path(folder, "state.json"), state)
        _wait_ready(folder, state, names, timeout, since)
    except BaseException:
        _stop_services(folder, names)
        with contextlib.suppress(OSError):
            os.remove(_path(folder, "state.json"))
        raise
    return {**state, "already_running": False, "restarted": [], "wiped": wiped}


def _own_sqlite(state: dict) -> bool:
    """True if the database is a SQLite file inside the sandbox's folder."""
    prefix = "sqlite:///"
    url = state["db_url"]
    if not url.startswith(prefix):
        return False
    path = os.path.abspath(url[len(prefix) :])
    return path.startswith(state["dir"].rstrip(os.sep) + os.sep)


def _stale_data(state: dict) -> list[str]:
    """Describe the orders, products and queue entries an earlier sandbox left."""
    found = []
    try:
        engine = sql_engine(state["db_url"])
        found += [f"{n} {name} rows" for name, n in schema.row_counts(engine) if n]
        engine.dispose()
    except (SQLAlchemyError, ActivityFailed, OSError) as error:
        raise SandboxError(
            f"database {redact_url(state['db_url'])} unusable: {error}"
        ) from error
    with _sandbox_redis(state) as client:
        length = client.xlen(schema.STREAM) if client.exists(schema.STREAM) else 0
        stock_key = next(client.scan_iter(match="stock:*", count=1000), None)
    if length:
        found.append(f"{length} entries in {schema.STREAM}")
    if stock_key:
        found.append("stock:* keys in Redis")
    return found


def _clear_stale_data(state: dict, reset: bool) -> bool:
    """Wipe what an earlier sandbox left, or refuse; True if something was wiped."""
    stale = _stale_data(state)
    if not stale:
        _create_tables(state, drop_first=True)  # empty: match the tables to the bugs
        return False
    if not (reset or (state["redis_embedded"] and _own_sqlite(state))):
        where = f" --dir {state['dir']}"
        raise SandboxError(
            f"the sandbox's data stores hold an earlier run's data ({'; '.join(stale)}) "
            "that a new sandbox cannot agree with. Wipe the sandbox's own keys "
            "(stock:*, idem:*, the stream) and tables with:\n"
            f"    chaospika sandbox up --reset{where} [your other options]"
        )
    _wipe(state)
    return True


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _stop_group(folder: str, names: list[str], timeout: float) -> list[str]:
    """SIGTERM the running services `names`, wait, SIGKILL after `timeout`."""
    running = {}
    for name in names:
        pid, alive = service_running(folder, name)
        if alive:
            running[name] = pid
            _signal(pid, signal.SIGTERM)
    for signum, wait in ((signal.SIGKILL, timeout), (None, 5.0)):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(
            service_running(folder, name)[1] for name in running
        ):
            time.sleep(POLL_SECONDS)
        for name, pid in running.items():
            if signum and service_running(folder, name)[1]:
                _signal(pid, signum)
    for pid in running.values():
        _proc.forget_exited(pid)
    return list(running)


def _stop_services(folder: str, names: Iterable[str], timeout: float = 10.0) -> list:
    """Stop api+worker first, then redis; remove every pidfile of `names`."""
    names = list(names)
    stopped = _stop_group(folder, [n for n in names if n != "redis"], timeout)
    stopped += _stop_group(folder, [n for n in names if n == "redis"], timeout)
    for name in names:
        with contextlib.suppress(OSError):
            os.remove(_path(folder, f"{name}.pid"))
    return stopped


def down(dir: str | None = None, timeout: float = STOP_TIMEOUT_SECONDS) -> dict:
    """Stop every service of the sandbox; return {"dir", "stopped": [names]}.

    A service is signalled only if its pid still runs that service's command.
    """
    folder = sandbox_dir(dir)
    names = [name for name in SERVICES if os.path.exists(_path(folder, f"{name}.pid"))]
    return {"dir": folder, "stopped": _stop_services(folder, names, timeout)}


def status(dir: str | None = None) -> dict:
    """Return state.json plus ``services`` {name: {pid, running, pidfile}} and ``running``."""
    folder = sandbox_dir(dir)
    state = read_state(folder) or {"dir": folder, "pidfiles": {}}
    services = {}
    for name in SERVICES:
        if name in state["pidfiles"]:
            pid, running = service_running(folder, name)
            pidfile = state["pidfiles"][name]
            services[name] = {"pid": pid, "running": running, "pidfile": pidfile}
    running = bool(services) and all(item["running"] for item in services.values())
    return {**state, "services": services, "running": running}


def _wait_drained(client: redis.Redis, timeout: float) -> bool:
    """Wait until the worker has no pending or undelivered entries."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = (
            client.xinfo_groups(schema.STREAM) if client.exists(schema.STREAM) else []
        )
        group = next((g for g in groups if g["name"] == schema.GROUP), None)
        if group is None or (not group["pending"] and not group.get("lag")):
            return True
        time.sleep(POLL_SECONDS * 2)
    return False


def _delete_keys(client: redis.Redis, pattern: str) -> int:
    deleted = 0
    batch: list[str] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted


def _wipe(state: dict) -> int:
    """Delete the sandbox's Redis keys, recreate stream and group, recreate the tables."""
    with _sandbox_redis(state) as client:
        deleted = _delete_keys(client, "stock:*") + _delete_keys(client, "idem:*")
        deleted += client.delete(schema.STREAM)
        schema.ensure_group(client)
    _create_tables(state, drop_first=True)
    return deleted


def reset(dir: str | None = None, drain_timeout: float = 10.0) -> dict:
    """Delete the sandbox's Redis keys (recreating stream and group) and its SQL tables.

    Waits up to `drain_timeout` s for a running worker to drain the stream first.
    Never flushes a database: only stock:*, idem:* and the stream are deleted.
    """
    folder = sandbox_dir(dir)
    state = read_state(folder)
    if not state:
        raise SandboxError(f"sandbox is not running (no state.json in {folder})")
    if service_running(folder, "worker")[1]:
        with _sandbox_redis(state) as client:
            _wait_drained(client, drain_timeout)
    deleted = _wipe(state)
    return {"dir": folder, "deleted_keys": deleted, "tables": ["products", "orders"]}
