"""`chaospika sandbox up --redis-container`: the CLI runs the sandbox's Redis in a
container (behind the fault proxy too), `up` starts it again with its data, `down`
removes it."""

import json
import os
import subprocess
import sys
import urllib.request
import uuid

import pytest
import redis
from sandbox_fixtures import wait_until
from sqlalchemy import create_engine, text

from chaospika._ports import free_port
from chaospika.cli import main
from chaospika.sandbox import manager, redis_container

SCRIPT = os.path.join(os.path.dirname(sys.executable), "chaospika")
CLI = [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "chaospika.cli"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)], check=False, capture_output=True, text=True, timeout=60
    )


def post(url: str, body: dict, key: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return response.status


def containers_named(docker_api, name: str) -> list[dict]:
    found = docker_api.containers(all=True, filters={"name": f"^/{name}$"})
    return [summary for summary in found if summary["Names"] == [f"/{name}"]]


@pytest.fixture
def container_cli(sandbox_redis_image, docker_api, tmp_path):
    """(folder, `up` options on free ports); sandbox and container removed after."""
    folder = tmp_path / "sb"
    redis_port = free_port()
    options = ["--dir", folder, "--api-port", free_port(), "--redis-port", redis_port]
    options += ["--proxy-port", free_port(), "--proxy-redis-port", free_port()]
    options += ["--proxy-api-port", free_port()]
    yield folder, options, redis_container.container_name(redis_port)
    manager.down(str(folder))
    for left in containers_named(
        docker_api, redis_container.container_name(redis_port)
    ):
        docker_api.remove_container(left["Id"], force=True)


def run_main(capsys, *args) -> tuple[int, str]:
    """`chaospika <args>` in this process (no interpreter start): (code, stdout)."""
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    return code, capsys.readouterr().out


def test_cli_runs_redis_in_a_container_and_down_removes_it(
    container_cli, docker_api, capsys
):
    folder, options, name = container_cli
    with pytest.raises(SystemExit) as refused:  # argparse: not with --redis-url
        main(["sandbox", "up", "--redis-container", "--redis-url", "redis://x"])
    assert refused.value.code == 2

    started = cli("sandbox", "up", "--redis-container", "--proxy", *options)

    assert started.returncode == 0, started.stderr
    assert f"(container {name})" in started.stdout
    code, out = run_main(capsys, "sandbox", "status", "--json", "--dir", folder)
    assert code == 0, out
    state = json.loads(out)
    assert state["services"]["redis"] == {
        "pid": None,
        "pidfile": None,
        "running": True,
        "container": name,
    }
    assert state["redis_container"] == name and state["redis_embedded"] is False
    assert not (folder / "redis.pid").exists()
    labels = docker_api.inspect_container(name)["Config"]["Labels"]
    assert labels[redis_container.SANDBOX_LABEL] == str(folder)
    # the API reaches the container's Redis through the proxy
    assert state["proxy_upstream"] == f"127.0.0.1:{state['redis_port']}"
    assert state["api_redis_url"].endswith(f":{state['proxy_redis_port']}/0")

    api = state["api_url"]
    assert post(f"{api}/products/p1/init", {"stock": 5}) == 200
    body = {"product_id": "p1", "user_id": "u"}
    assert post(f"{api}/orders", body, key=uuid.uuid4().hex) == 202
    engine = create_engine(state["db_url"])

    def stored() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT COUNT(*) FROM orders")).scalar_one()

    wait_until(lambda: stored() == 1, 10)
    engine.dispose()

    # the container stopped: the sandbox is not running; `up` starts it, data kept
    docker_api.stop(name, timeout=5)
    assert manager.status(str(folder))["running"] is False
    code, out = run_main(
        capsys, "sandbox", "up", "--redis-container", "--proxy", *options
    )
    assert code == 0 and "partly running: restarted redis" in out, out
    client = redis.Redis.from_url(state["redis_url"], decode_responses=True)
    assert client.get("stock:p1") == "4"
    client.close()
    assert manager.status(str(folder))["services"]["redis"]["running"] is True

    code, out = run_main(capsys, "sandbox", "down", "--dir", folder)
    assert code == 0 and f"removed the Redis container {name}" in out, out
    assert containers_named(docker_api, name) == []
    assert manager.status(str(folder))["services"]["redis"]["running"] is False


def test_an_up_that_fails_removes_the_container_it_started(
    sandbox_redis_image, docker_api, tmp_path
):
    folder, redis_port = str(tmp_path / "slow"), free_port()
    name = redis_container.container_name(redis_port)
    try:
        with pytest.raises(manager.SandboxError, match="not ready after"):
            manager.up(
                folder,
                api_port=free_port(),
                redis_port=redis_port,
                redis_container=True,
                timeout=0.001,
            )
        assert containers_named(docker_api, name) == []
        assert manager.read_state(folder) is None
    finally:
        manager.down(folder)
        for left in containers_named(docker_api, name):
            docker_api.remove_container(left["Id"], force=True)
