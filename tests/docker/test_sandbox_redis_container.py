"""The sandbox's Redis in a container: built with docker import, host network, and
acknowledged writes kept across a stop, and even a SIGKILL."""

import os

import pytest
import redis
from sandbox_fixtures import wait_until

from chaospika import ledger
from chaospika._ports import free_port
from chaospika.docker import actions, probes
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
def redis_box(sandbox_redis_image, tmp_path):
    """The sandbox Redis container of a folder under tmp_path; removed after."""
    folder = str(tmp_path / "sandbox")
    os.makedirs(folder)
    started = redis_container.start_redis_container(folder, free_port())
    try:
        yield started
    finally:
        redis_container.stop_redis_container(started["container"])


def test_the_container_serves_redis_on_the_host_network(redis_box, docker_api):
    client = redis.Redis.from_url(redis_box["redis_url"], decode_responses=True)
    assert client.ping() is True
    client.close()
    document = docker_api.inspect_container(redis_box["id"])
    assert document["HostConfig"]["NetworkMode"] == "host"
    assert document["HostConfig"]["Init"] is True
    assert document["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert document["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
    assert redis_box["image"].startswith(f"{redis_container.IMAGE_REPOSITORY}:")
    assert redis_box["container"] == redis_container.container_name(
        redis_box["redis_port"]
    )
    status = redis_container.redis_container_status(redis_box["container"])
    assert status["running"] is True


@pytest.mark.parametrize("fault", ["stop", "kill"])
def test_acknowledged_writes_survive_a_stop_and_a_kill(redis_box, fault):
    client = redis.Redis.from_url(redis_box["redis_url"], decode_responses=True)
    client.set("stock:p", 7)
    ids = [client.xadd("orders:stream", {"order_id": str(i)}) for i in range(50)]
    client.close()
    name = redis_box["container"]

    if fault == "stop":
        actions.stop_containers(name=name, timeout=5)
        assert probes.containers_running(name=name) is False
        actions.start_containers(name=name)
        assert probes.time_until_healthy(name=name, timeout=20)["healthy"] is True
        wait_until(lambda: answers(redis_box["redis_url"]), 20, 0.05)
    else:
        actions.kill_containers(name=name, signal="SIGKILL")
        assert probes.containers_running(name=name) is False
        # what `sandbox up` does on a sandbox whose Redis container stopped
        back = redis_container.start_stopped_redis_container(name)
        assert back["started"] is True and back["redis_url"] == redis_box["redis_url"]
        (report,) = ledger.undo_outstanding()
        assert report["result"]["already_running"] is True

    client = redis.Redis.from_url(redis_box["redis_url"], decode_responses=True)
    assert client.get("stock:p") == "7"
    assert [entry_id for entry_id, _ in client.xrange("orders:stream")] == ids
    client.close()


def test_a_new_sandbox_starts_empty_and_replaces_its_old_container(redis_box):
    client = redis.Redis.from_url(redis_box["redis_url"])
    client.set("left", "over")
    client.close()
    folder = os.path.dirname(redis_box["data_dir"])
    port = redis_box["redis_port"]

    again = redis_container.start_redis_container(folder, port)

    assert (
        again["container"] == redis_box["container"] and again["id"] != redis_box["id"]
    )
    client = redis.Redis.from_url(again["redis_url"])
    assert client.get("left") is None
    client.close()
    stopped = redis_container.stop_redis_container(again["container"])
    assert stopped == {
        "container": again["container"],
        "stopped": True,
        "removed": True,
    }
    gone = redis_container.redis_container_status(again["container"])
    assert gone == {"container": again["container"], "exists": False, "running": False}


def test_without_persistence_a_stop_loses_everything(sandbox_redis_image, tmp_path):
    # what the append-only file is for: the same stop on a Redis keeping nothing
    box = redis_container.start_redis_container(
        str(tmp_path), free_port(), persistent=False
    )
    try:
        client = redis.Redis.from_url(box["redis_url"])
        client.set("stock:p", 7)
        client.close()
        actions.stop_containers(name=box["container"], timeout=5)
        actions.start_containers(name=box["container"])
        wait_until(lambda: answers(box["redis_url"]), 20, 0.05)
        client = redis.Redis.from_url(box["redis_url"])
        assert client.get("stock:p") is None
        client.close()
    finally:
        redis_container.stop_redis_container(box["container"])
