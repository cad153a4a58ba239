"""stop_server / start_server with a container target: the sandbox's Redis in a
Docker container is stopped (or killed) by the engine, recorded in the ledger
first, and its undo starts the container again with its data (appendonly)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from chaoslib.exceptions import ActivityFailed
from sandbox_fixtures import wait_until

from chaospika import ledger
from chaospika._ports import free_port
from chaospika.redis import _server
from chaospika.redis.actions import start_server, stop_server
from chaospika.sandbox import redis_container


def answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture
def redis_box(sandbox_redis_image, docker_api, tmp_path):
    """A sandbox-like Redis container of a folder under tmp_path; removed after."""
    folder = str(tmp_path / "sandbox")
    os.makedirs(folder)
    started = redis_container.start_redis_container(folder, free_port())
    try:
        yield started
    finally:
        redis_container.stop_redis_container(started["container"], timeout=1)


def running(docker_api, name: str) -> bool:
    return bool(docker_api.inspect_container(name)["State"]["Running"])


def test_stop_then_ledger_undo_brings_the_data_back(redis_box, docker_api):
    url, name = redis_box["redis_url"], redis_box["container"]
    client = redis.Redis.from_url(url, decode_responses=True)
    client.set("stock:p", 7)
    client.close()

    stopped = stop_server(url, container=name, timeout=5)
    assert stopped["stopped"] is True and stopped["how"] == "stop"
    assert stopped["container"] == name
    assert not answers(url)
    assert not running(docker_api, name)
    record = ledger.get(stopped["fault"]).data
    assert record["state"] == "applied" and record["stopped"] is True
    assert record["target"]["container"] == name
    assert record["undo"]["args"]["container"] == name

    report = ledger.undo(stopped["fault"])
    assert report["result"]["started"] is True
    assert answers(url) and running(docker_api, name)
    client = redis.Redis.from_url(url, decode_responses=True)
    assert client.get("stock:p") == "7"
    client.close()

    # twice is safe: through the ledger, and the undo function itself
    assert ledger.undo(stopped["fault"])["already"] is True
    again = _server.undo_stop(**record["undo"]["args"])
    assert again == {"started": False, "already_running": True}
    assert ledger.get(stopped["fault"]).data["state"] == "undone"


def test_kill_then_start_server_from_the_ledger(redis_box, docker_api):
    url, name = redis_box["redis_url"], redis_box["container"]
    stopped = stop_server(url, container=name, how="kill")
    assert stopped["stopped"] is True and stopped["how"] == "kill"
    assert not answers(url) and not running(docker_api, name)
    assert stop_server(url, container=name)["stopped"] is False  # nothing there

    started = start_server(url)
    assert started["started"] is True and started["faults"] == [stopped["fault"]]
    assert answers(url)
    assert start_server(url, container=name)["already_running"] is True


def test_a_container_that_does_not_run_the_server_is_refused(
    redis_box, redis_url, docker_api
):
    # redis_url: a Redis of this machine, not the container's
    with pytest.raises(ActivityFailed, match="not a process of container"):
        stop_server(redis_url, container=redis_box["container"])
    assert running(docker_api, redis_box["container"]) and answers(redis_url)
    assert ledger.outstanding() == []


def test_arguments_are_checked_before_anything_is_touched(redis_box):
    url, name = redis_box["redis_url"], redis_box["container"]
    with pytest.raises(ActivityFailed, match="'container' or 'pidfile', not both"):
        stop_server(url, container=name, pidfile="/tmp/x.pid")
    with pytest.raises(ActivityFailed, match="'how' must be one of stop, kill"):
        stop_server(url, container=name, how="shutdown")
    with pytest.raises(ActivityFailed, match="'docker_url'"):
        stop_server(url, container=name, docker_url="tcp://10.1.2.3:2375")
    with pytest.raises(ActivityFailed, match="'docker_url' needs 'container'"):
        stop_server(url, start_command=["redis-server"], docker_url="unix:///x")
    with pytest.raises(ActivityFailed, match="no container"):
        stop_server(url, container=f"{name}-missing")
    assert answers(url) and ledger.outstanding() == []


def test_sigkilled_owner_with_a_ttl_the_watchdog_starts_the_container(
    redis_box, docker_api
):
    url, name = redis_box["redis_url"], redis_box["container"]
    script = (
        "import os, signal\n"
        "from chaospika.redis.actions import stop_server\n"
        f"done = stop_server({url!r}, container={name!r}, ttl=1)\n"
        "print(done['fault'], flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    owner = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr.decode()[-2000:]
    killed_at = time.monotonic()
    assert not answers(url) and not running(docker_api, name)

    wait_until(lambda: answers(url), 10, 0.05)
    assert time.monotonic() - killed_at < 1 + 5
    fault = owner.stdout.decode().strip()
    wait_until(lambda: ledger.get(fault).data["state"] == "undone", 5, 0.05)
    assert ledger.get(fault).data["undone_by"] == "ttl"
    assert running(docker_api, name)
