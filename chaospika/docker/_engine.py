"""The Docker engine: which one (a local socket or loopback TCP only), and container facts.

The Docker SDK for Python (`pip install chaostoolkit-pika[docker]`) is imported
only here, and only when an engine is used, so the fault registry stays light.
"""

import contextlib
import ipaddress
import os
import signal as signals
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from chaoslib.exceptions import ActivityFailed

__all__ = [
    "DEFAULT_DOCKER_URL",
    "connect",
    "connected",
    "docker_url",
    "facts",
    "find",
    "signals_held",
    "started_at",
    "wait_for",
]

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
LOOPBACK_NAMES = ("localhost",)
# Seconds the SDK waits for an answer, on top of a stop's own timeout.
API_TIMEOUT_SECONDS = 30


def docker_url(value: Any = None) -> str:
    """The engine's URL: `value`, else $DOCKER_HOST, else the local socket.

    Only ``unix://`` sockets and ``tcp://`` / ``http://`` on a loopback address
    are accepted: faults never reach another machine's engine.
    """
    chosen = value if value not in (None, "") else os.environ.get("DOCKER_HOST")
    url = str(chosen).strip() if chosen else DEFAULT_DOCKER_URL
    where = "argument 'docker_url'" if value not in (None, "") else "DOCKER_HOST"
    try:
        parsed = urlsplit(url)
        port = parsed.port
    except ValueError as error:
        raise ActivityFailed(f"{where} is not a valid URL ({error}): {url!r}")
    if parsed.scheme == "unix":
        if not parsed.path or parsed.netloc:
            raise ActivityFailed(
                f"{where} must be unix:///absolute/path/to/docker.sock, got {url!r}"
            )
        return f"unix://{parsed.path}"
    if parsed.scheme in ("tcp", "http"):
        host = (parsed.hostname or "").lower()
        if not _loopback(host) or port is None:
            raise ActivityFailed(
                f"{where} must be a unix:// socket or tcp://HOST:PORT on a loopback "
                f"address (127.0.0.0/8, ::1, localhost), got {url!r}"
            )
        return f"{parsed.scheme}://{parsed.netloc}"
    raise ActivityFailed(
        f"{where} must start with unix://, tcp:// or http:// (a local engine), "
        f"got {url!r}"
    )


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def connect(url: str) -> Any:
    """A low-level client (``docker.APIClient``) of the engine at `url` (checked)."""
    try:
        import docker
    except ImportError:
        raise ActivityFailed(
            "the Docker SDK for Python is not installed: "
            "pip install 'chaostoolkit-pika[docker]'"
        ) from None
    try:
        return docker.APIClient(
            base_url=docker_url(url), version="auto", timeout=API_TIMEOUT_SECONDS
        )
    except docker.errors.DockerException as error:
        raise ActivityFailed(f"no Docker engine answers at {url}: {error}") from None


@contextlib.contextmanager
def connected(url: str) -> Iterator[Any]:
    """`connect(url)`, closed at the end; engine errors become ActivityFailed."""
    import docker
    import requests

    client = connect(url)
    try:
        yield client
    except (docker.errors.DockerException, requests.RequestException) as error:
        raise ActivityFailed(f"Docker engine {url}: {error}") from None
    finally:
        client.close()


def find(client: Any, container: str) -> dict | None:
    """The inspect document of `container` (id or name), None if there is none."""
    import docker

    try:
        return client.inspect_container(container)
    except docker.errors.NotFound:
        return None


def started_at(text: str | None) -> float | None:
    """Docker's StartedAt (RFC 3339, nanoseconds) as a Unix time; None if unset."""
    if not text or text.startswith("0001-") or not text.endswith("Z"):
        return None  # never started (or not the engine's UTC form)
    head, _, fraction = text[:-1].partition(".")
    micros = (fraction + "000000")[:6]
    try:
        return datetime.fromisoformat(f"{head}.{micros}+00:00").timestamp()
    except ValueError:
        return None


def facts(document: dict) -> dict:
    """What the activities report of one container (from its inspect document)."""
    state = document.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    policy = ((document.get("HostConfig") or {}).get("RestartPolicy") or {}).get(
        "Name"
    ) or "no"
    return {
        "name": str(document.get("Name", "")).lstrip("/"),
        "id": document.get("Id", ""),
        "status": state.get("Status"),
        "running": bool(state.get("Running")) and not state.get("Paused"),
        "paused": bool(state.get("Paused")),
        "restarting": bool(state.get("Restarting")),
        "health": health,
        "restart_count": int(document.get("RestartCount") or 0),
        "restart_policy": policy,
        "exit_code": state.get("ExitCode"),
        "started_at": started_at(state.get("StartedAt")),
    }


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a fault is applied: a stop cut in half by an
    interrupt could finish in the engine after its undo ran. They are delivered
    (the run interrupted) as soon as the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signals.SIGINT, signals.SIGTERM}
    previous = signals.pthread_sigmask(signals.SIG_BLOCK, held)
    try:
        yield
    finally:
        signals.pthread_sigmask(signals.SIG_SETMASK, previous)


def wait_for(check: Any, timeout: float, step: float = 0.05) -> Any:
    """Poll `check()` until truthy (returned) or `timeout` seconds; then its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)
