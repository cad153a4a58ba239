"""`chaos run experiments/container-stop.json` against a sandbox whose Redis runs in a
real container (the Docker engine of `.ci/docker.sh`).

Skipped without a reachable engine unless CHAOSPIKA_REQUIRE_DOCKER is set (CI).
"""

import contextlib
import os
from pathlib import Path

import pytest
from chaos_runs import run_chaos, sandbox_env, verdict

from chaospika.docker import probes
from chaospika.sandbox import manager

EXPERIMENT = (
    Path(__file__).resolve().parent.parent / "experiments" / "container-stop.json"
)
CONSISTENCY = "no-acknowledged-order-lost"

pytestmark = pytest.mark.slow


def engine_or_skip():
    """A client of the local engine; skip without one (fail with CHAOSPIKA_REQUIRE_DOCKER)."""
    try:
        from chaospika.docker import _engine

        return _engine.connect(None)
    except Exception as error:  # noqa: BLE001 - any reason means "no engine"
        if os.environ.get("CHAOSPIKA_REQUIRE_DOCKER"):
            pytest.fail(f"CHAOSPIKA_REQUIRE_DOCKER is set but no engine: {error}")
        pytest.skip(f"no Docker engine reachable ({error}): bash .ci/docker.sh")


@pytest.fixture
def container_sandbox(make_sandbox, tmp_path):
    """A sandbox whose Redis is the sandbox Redis container (`redis_container=True`);
    stopped and removed after (the image too, if this test built it)."""
    client = engine_or_skip()
    import docker

    from chaospika.sandbox import redis_container

    image = redis_container.redis_image_reference()
    try:
        client.inspect_image(image)
        built = False
    except docker.errors.ImageNotFound:
        built = True
    state = None
    try:
        state = make_sandbox(tmp_path, redis_container=True)
        yield state
    finally:
        if state is not None:
            manager.down(state["dir"])  # before the image goes
        if built:
            with contextlib.suppress(docker.errors.APIError):
                client.remove_image(image)
        client.close()


def output(journal: dict, name: str):
    for run in journal["run"]:
        if run["activity"]["name"] == name:
            return run["output"]
    raise AssertionError(f"no activity {name} in the method")


def after_probe(journal: dict, name: str):
    for probe in journal["steady_states"]["after"]["probes"]:
        if probe["activity"]["name"] == name:
            return probe["output"]
    raise AssertionError(f"no probe {name} after the method")


def test_stopping_the_redis_container_degrades_as_declared_and_loses_nothing(
    container_sandbox, tmp_path
):
    state = container_sandbox
    env = sandbox_env(state, PIKA_REDIS_CONTAINER=state["redis_container"])
    journal = run_chaos(env, tmp_path / "run", EXPERIMENT, timeout=120)

    assert journal["status"] == "completed", journal["status"]
    assert journal["deviated"] is False
    stopped = output(journal, "stop-the-redis-container")
    assert [c["name"] for c in stopped["containers"]] == [state["redis_container"]]
    assert output(journal, "redis-container-is-down") is False
    down = output(journal, "health-while-redis-is-down")
    assert down["ratio"] == 1.0 and set(down["statuses"]) == {"503"}, down
    assert output(journal, "health-says-degraded-at-once")["status"] == 503
    assert output(journal, "time-until-redis-is-healthy")["healthy"] is True
    load = output(journal, "customers-place-orders")
    assert load["thresholds_passed"] is True, load["thresholds"]
    refused = load["metrics"]["http_reqs{status:503}"]["count"]
    retry_after = load["captures"]["retry_after"]
    assert refused > 0 and len(retry_after) == refused  # every 503 says when to retry
    assert all(int(value) >= 1 for value in retry_after)
    after = after_probe(journal, CONSISTENCY)
    assert after["consistent"] is True and after["lost"] == [], after["violations"]
    # an order whose reply was cut by the stop is stored but was answered 503:
    # allowed (allow_unexpected; a retry with its Idempotency-Key returns it)
    assert 0 < after["acknowledged_count"] <= after["distinct_orders"]
    unexpected = after["distinct_orders"] - after["acknowledged_count"]
    assert unexpected == after["unexpected_count"] <= refused
    kinds = [(f["kind"], f["state"], f["undone_by"]) for f in journal["pika_faults"]]
    assert kinds == [("docker.stop", "undone", "start_containers")]
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    assert probes.containers_running(name=state["redis_container"]) is True
    assert verdict(tmp_path / "run" / "journal.json") == 0
