"""Start, stop, inspect and reset the sandbox: embedded Redis, order API, worker.

With ``proxy`` a fourth service, the package's fault proxy
(``python -m chaospika.network.server``), stands between the API and Redis:
one proxy named ``redis`` listens on 127.0.0.1:`proxy_redis_port` and forwards
to the sandbox's Redis; the API (only the API: the worker keeps its direct
connection) uses it, and its Toxiproxy-compatible API is on `proxy_port`. A
second proxy, ``api``, listens on 127.0.0.1:`proxy_api_port` in front of the
API itself (``proxied_api_url``, ``proxied_ws_url``): faults on the clients' side,
such as delays on the WebSocket feed.

Every service runs detached, with a pidfile ``<name>.pid``, a log and a start
record ``<name>.pid.cmd.json`` (argv, cwd, env, log; see chaospika._proc) in the
state folder, so it can be restarted exactly, by `up` or by the process actions
(`start_process`); ``state.json`` describes the whole sandbox.

With ``redis_container`` the sandbox's Redis is not a process but a Docker
container (chaospika.sandbox.redis_container: host network, 127.0.0.1:`redis_port`,
data in ``<dir>/redis-data``), named in state.json as ``redis_container``; `up`
starts it (empty) first, `up` on a partly running sandbox starts it again with
its data, `down` stops and removes it last, `status` reports it as ``redis``.
"""

import contextlib
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
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
    "DEFAULT_PROXY_PORT",
    "DEFAULT_PROXY_REDIS_PORT",
    "DEFAULT_REDIS_PORT",
    "PROXY_NAME",
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
DEFAULT_PROXY_PORT = 8732
DEFAULT_PROXY_REDIS_PORT = 6392
DEFAULT_PROXY_API_PORT = 8733
API_PROXY_NAME = "api"  # in front of the API, for faults on the clients' side
DEFAULT_REDIS_TIMEOUT = 0.5
PROXY_NAME = "redis"
SERVICES = ("redis", "proxy", "api", "worker")  # start order; stop in reverse
STOP_TIERS = (("api", "worker"), ("proxy",), ("redis",))
MODULES = {
    "api": "chaospika.sandbox.api",
    "worker": "chaospika.sandbox.worker",
    "proxy": "chaospika.network.server",
}
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
    for option in ("--port", "--listen"):
        if option in argv[:-1]:
            markers.append(argv[argv.index(option) + 1])
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
                elif name == "proxy":
                    ready = _proxy_ready(state)
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


def _proxy_ready(state: dict) -> bool:
    """True when the proxy's API knows the proxy `redis` and it accepts connections."""
    url = f"{state['proxy_url']}/proxies/{state['proxy_name']}"
    return _http_status(url) == 200 and wait_for_port(
        "127.0.0.1", state["proxy_redis_port"], 0.05
    )


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


def _upstream(redis_url: str) -> str:
    """host:port of a redis:// URL (the proxy's upstream)."""
    parts = urllib.parse.urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise SandboxError(
            f"proxy needs a redis:// URL with a host, got {redact_url(redis_url)!r}"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 6379}"


def _via_proxy(redis_url: str, port: int) -> str:
    """`redis_url` with its host and port replaced by the proxy's 127.0.0.1:`port`."""
    parts = urllib.parse.urlsplit(redis_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _check_timeout(value: Any) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not 0 < value <= 60:
        raise SandboxError(f"redis_timeout must be > 0 and <= 60 s, got {value!r}")
    return float(value)


def _new_state(
    folder: str,
    bugs: tuple[str, ...],
    api_port: int,
    redis_port: int,
    redis_url: str | None,
    db_url: str | None,
    work_ms: float,
    batch: int,
    proxy: bool = False,
    proxy_port: int = DEFAULT_PROXY_PORT,
    proxy_redis_port: int = DEFAULT_PROXY_REDIS_PORT,
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
    proxy_api_port: int = DEFAULT_PROXY_API_PORT,
) -> dict:
    """Describe a sandbox about to start (validating the options)."""
    _check_port("api_port", api_port)
    redis_timeout = _check_timeout(redis_timeout)
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
    names = [
        name
        for name in SERVICES
        if (name != "redis" or embedded) and (name != "proxy" or proxy)
    ]
    pidfiles = {name: _path(folder, f"{name}.pid") for name in names}
    proxied = {
        "proxy_url": None,
        "proxy_name": None,
        "proxy_port": None,
        "proxy_redis_port": None,
        "proxy_config": None,
        "proxy_upstream": None,
        "api_redis_url": redis_url,
        "proxy_api_port": None,
        "proxied_api_url": None,
        "proxied_ws_url": None,
    }
    if proxy:
        _check_port("proxy_port", proxy_port)
        _check_port("proxy_redis_port", proxy_redis_port)
        _check_port("proxy_api_port", proxy_api_port)
        proxied = {
            "proxy_url": f"http://127.0.0.1:{proxy_port}",
            "proxy_name": PROXY_NAME,
            "proxy_port": proxy_port,
            "proxy_redis_port": proxy_redis_port,
            "proxy_config": _path(folder, "proxies.json"),
            "proxy_upstream": _upstream(redis_url),
            "api_redis_url": _via_proxy(redis_url, proxy_redis_port),
            "proxy_api_port": proxy_api_port,
            "proxied_api_url": f"http://127.0.0.1:{proxy_api_port}",
            "proxied_ws_url": f"ws://127.0.0.1:{proxy_api_port}/ws",
        }
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
        "redis_timeout": redis_timeout,
        **proxied,
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
    if name == "proxy":
        return [
            sys.executable,
            "-m",
            MODULES[name],
            "--listen",
            f"127.0.0.1:{state['proxy_port']}",
            "--config",
            state["proxy_config"],
        ]
    common = ["--redis-url", state["redis_url"], "--db-url", state["db_url"]]
    if name == "api":
        common[1] = state.get("api_redis_url") or state["redis_url"]
        extra = ["--port", str(state["api_port"])]
        extra += ["--redis-timeout", f"{state.get('redis_timeout', 0.5):g}"]
    else:
        extra = [
            "--work-ms",
            f"{state['work_ms']:g}",
            "--batch",
            str(state["batch"]),
        ]
    return [sys.executable, "-m", MODULES[name], *common, *extra, "--bugs", bugs]


@contextlib.contextmanager
def _container_errors() -> Iterator[None]:
    """RedisContainerError (engine, image, container failures) as SandboxError."""
    from chaospika.sandbox.redis_container import RedisContainerError

    try:
        yield
    except RedisContainerError as error:
        raise SandboxError(str(error)) from error


def _container_running(state: dict) -> bool:
    """True if the sandbox's Redis container runs (state has one)."""
    from chaospika.sandbox import redis_container

    with _container_errors():
        found = redis_container.redis_container_status(
            state["redis_container"], state.get("docker_url")
        )
    return bool(found["running"])


def _stop_container(state: dict) -> dict | None:
    """Stop and remove the sandbox's Redis container, if state has one."""
    if not state.get("redis_container"):
        return None
    from chaospika.sandbox import redis_container

    with _container_errors():
        return redis_container.stop_redis_container(
            state["redis_container"], state.get("docker_url")
        )


def _restart_stopped(folder: str, state: dict, timeout: float) -> list[str]:
    """Start again, from their records, the services of `state` that are not running
    (and its Redis container, keeping its data: listed as ``redis``)."""
    stopped = [
        name
        for name in SERVICES
        if name in state["pidfiles"] and not service_running(folder, name)[1]
    ]
    restarted = []
    if state.get("redis_container") and not _container_running(state):
        from chaospika.sandbox import redis_container

        with _container_errors():
            redis_container.start_stopped_redis_container(
                state["redis_container"], state.get("docker_url")
            )
        _prepare_data(state)
        restarted.append("redis")
    since = time.time()
    try:
        for name in stopped:
            start_recorded(state["pidfiles"][name])
            if name == "redis":
                wait_for_port("127.0.0.1", state["redis_port"], 10.0)
                _prepare_data(state)
            if name == "proxy":
                _wait_ready(folder, state, ["proxy"], min(timeout, 10.0), since)
        _wait_ready(folder, state, stopped, timeout, since)
    except BaseException:
        _stop_services(folder, stopped)
        raise
    return restarted + stopped


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
    proxy: bool = False,
    proxy_port: int = DEFAULT_PROXY_PORT,
    proxy_redis_port: int = DEFAULT_PROXY_REDIS_PORT,
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
    redis_container: bool = False,
    proxy_api_port: int = DEFAULT_PROXY_API_PORT,
    docker_url: str | None = None,
) -> dict:
    """Start the sandbox in `dir` (see sandbox_dir) and return its state.

    With `proxy` the fault proxy runs as a fourth service between the API and
    Redis (see the module's docstring); `redis_timeout` (s) bounds each of the
    API's Redis calls. With `redis_container` Redis runs, empty, in a Docker
    container on 127.0.0.1:`redis_port` (engine `docker_url`, default
    $DOCKER_HOST or the local socket) instead of as a process; not with
    `redis_url`.

    On a running sandbox nothing changes and the state comes back with
    ``already_running`` True; on a partly running one the stopped services are
    restarted from their start records (``restarted`` lists them).

    Data left by an earlier sandbox cannot agree with a new one (the embedded or
    container Redis starts empty): the sandbox's own SQLite file is wiped on start
    (``wiped`` True); orders in an external database or Redis make `up` refuse
    unless `reset` is given, which deletes the sandbox's keys and tables first.
    """
    folder = sandbox_dir(dir)
    try:
        bugs = parse_bugs(bugs)
    except ValueError as error:
        raise SandboxError(str(error)) from error
    if redis_container and redis_url is not None:
        raise SandboxError(
            "redis_container starts the sandbox's own Redis: not with redis_url"
        )
    old = read_state(folder)
    if old and any(service_running(folder, name)[1] for name in old["pidfiles"]):
        restarted = _restart_stopped(folder, old, timeout)
        return {**old, "already_running": not restarted, "restarted": restarted}
    if old:  # a container left by a sandbox whose processes all stopped
        with contextlib.suppress(SandboxError):  # no engine: the port check tells
            _stop_container(old)
    if redis_container:
        _check_port("redis_port", redis_port)
    state = _new_state(
        folder,
        bugs,
        api_port,
        redis_port,
        # the URL start_redis_container serves (so the proxy's upstream is known)
        f"redis://127.0.0.1:{redis_port}/0" if redis_container else redis_url,
        db_url,
        work_ms,
        batch,
        proxy,
        proxy_port,
        proxy_redis_port,
        redis_timeout,
        proxy_api_port,
    )
    state["redis_container"] = None
    state["docker_url"] = None
    if redis_container:
        state["redis_port"] = redis_port
    os.makedirs(folder, mode=0o700, exist_ok=True)
    ports = [state[key] for key in ("api_port", "redis_port", "proxy_port")]
    ports += [state["proxy_redis_port"], state.get("proxy_api_port")]
    if len([port for port in ports if port]) != len({port for port in ports if port}):
        raise SandboxError(f"the sandbox's ports must differ, got {ports}")
    busy = [port for port in ports if port and not _port_free(port)]
    if busy:
        raise SandboxError(
            f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use; "
            "pass other --api-port/--redis-port/--proxy-port/--proxy-redis-port/"
            "--proxy-api-port "
            "(or --redis-url)"
        )
    names = list(state["pidfiles"])
    since = time.time()
    wiped = False
    box = None
    if redis_container:
        from chaospika.sandbox import redis_container as containers

        with _container_errors():
            box = containers.start_redis_container(
                folder, redis_port, docker_url=docker_url
            )
        state["redis_container"] = box["container"]
        state["docker_url"] = box["docker_url"]
    try:
        if state["redis_embedded"]:
            _start_service(folder, "redis", _service_argv("redis", state), {})
            _wait_ready(folder, state, ["redis"], min(timeout, 10.0), since)
        wiped = _clear_stale_data(state, reset)
        _prepare_data(state)
        if proxy:
            _write_proxy_config(state)
            _start_service(
                folder, "proxy", _service_argv("proxy", state), _python_env()
            )
            _wait_ready(folder, state, ["proxy"], min(timeout, 10.0), since)
        for name in ("api", "worker"):
            _start_service(folder, name, _service_argv(name, state), _python_env())
        state["started_at"] = time.time()
        _proc.write_json(_path(folder, "state.json"), state)
        _wait_ready(folder, state, names, timeout, since)
    except BaseException:
        _stop_services(folder, names)
        if box is not None:
            with contextlib.suppress(SandboxError):
                _stop_container(state)
        with contextlib.suppress(OSError):
            os.remove(_path(folder, "state.json"))
        raise
    return {**state, "already_running": False, "restarted": [], "wiped": wiped}


def _write_proxy_config(state: dict) -> None:
    """Write the proxy's start config (Toxiproxy's -config format)."""
    config = [
        {
            "name": state["proxy_name"],
            "listen": f"127.0.0.1:{state['proxy_redis_port']}",
            "upstream": state["proxy_upstream"],
            "enabled": True,
        }
    ]
    if state.get("proxy_api_port"):
        config.append(
            {
                "name": API_PROXY_NAME,
                "listen": f"127.0.0.1:{state['proxy_api_port']}",
                "upstream": f"127.0.0.1:{state['api_port']}",
                "enabled": True,
            }
        )
    with open(state["proxy_config"], "w") as handle:
        json.dump(config, handle, indent=2)


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
    own_redis = state["redis_embedded"] or state.get("redis_container")
    if not (reset or (own_redis and _own_sqlite(state))):
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
    """Stop api+worker first, then the proxy, then redis; remove every pidfile of `names`."""
    names = list(names)
    stopped = []
    for tier in STOP_TIERS:
        stopped += _stop_group(folder, [n for n in names if n in tier], timeout)
    for name in names:
        with contextlib.suppress(OSError):
            os.remove(_path(folder, f"{name}.pid"))
    return stopped


def down(dir: str | None = None, timeout: float = STOP_TIMEOUT_SECONDS) -> dict:
    """Stop every service of the sandbox; return {"dir", "stopped": [names]}.

    A service is signalled only if its pid still runs that service's command.
    The Redis container, if any, is stopped and removed last (``redis`` in
    ``stopped`` if it was running; ``redis_container`` tells what was done).
    """
    folder = sandbox_dir(dir)
    names = [name for name in SERVICES if os.path.exists(_path(folder, f"{name}.pid"))]
    stopped = _stop_services(folder, names, timeout)
    container = _stop_container(read_state(folder) or {})
    if container and container["stopped"]:
        stopped.append("redis")
    return {"dir": folder, "stopped": stopped, "redis_container": container}


def status(dir: str | None = None) -> dict:
    """Return state.json plus ``services`` {name: {pid, running, pidfile}} and ``running``.

    A Redis container is the service ``redis`` with pid None and ``container``."""
    folder = sandbox_dir(dir)
    state = read_state(folder) or {"dir": folder, "pidfiles": {}}
    services = {}
    if state.get("redis_container"):
        box = {"pid": None, "pidfile": None, "container": state["redis_container"]}
        try:
            box["running"] = _container_running(state)
        except SandboxError as error:  # no engine: say so, do not fail
            box.update(running=False, error=str(error))
        services["redis"] = box
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
