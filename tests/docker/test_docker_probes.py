"""Container probes against the real engine: running, health, restart count, time to healthy."""

import time

import pytest
from chaoslib.exceptions import ActivityFailed

from chaospika.docker import actions, probes


def test_running_and_status(containers):
    up, down = containers.make("up"), containers.make("down", start=False)

    assert probes.containers_running(name=up["name"]) is True
    assert probes.containers_running(name=down["name"]) is False
    assert probes.containers_running(name=f"{containers.prefix}-none") is False
    pattern = f"{containers.prefix}-.*"
    assert probes.containers_running(name_pattern=pattern) is False

    status = probes.container_status(name_pattern=pattern)
    assert status["count"] == 2 and status["running_count"] == 1
    assert status["healthy_count"] == 1  # no health check: running is healthy
    by_name = {c["name"]: c for c in status["containers"]}
    assert by_name[up["name"]]["status"] == "running"
    assert by_name[down["name"]]["status"] == "created"
    assert by_name[up["name"]]["health"] is None
    actions.pause_containers(name=up["name"])
    assert probes.containers_running(name=up["name"]) is False
    actions.unpause_containers(name=up["name"])


def test_time_until_healthy_after_a_restart(containers):
    box = containers.make("a", health=True)
    first = probes.time_until_healthy(name=box["name"], timeout=15)
    assert first["healthy"] is True
    assert first["containers"][box["name"]]["health"] == "healthy"

    actions.stop_containers(name=box["name"], timeout=5)
    down = probes.time_until_healthy(name=box["name"], timeout=0.3)
    assert down["healthy"] is False and down["elapsed_seconds"] >= 0.3
    assert down["containers"][box["name"]]["status"] == "exited"

    actions.start_containers(name=box["name"])
    again = probes.time_until_healthy(name=box["name"], timeout=15)
    # the container makes itself ready 0.6 s after its start
    assert again["healthy"] is True and 0.3 <= again["elapsed_seconds"] < 15


def test_restart_count_counts_the_engines_restarts(containers):
    box = containers.make(
        "crashy", restart_policy="on-failure", script="sleep 0.2; exit 3"
    )
    steady = containers.make("steady")
    deadline = time.monotonic() + 15
    while probes.restart_count(name=box["name"])["restart_count"] < 1:
        assert time.monotonic() < deadline, "the engine never restarted the container"
        time.sleep(0.1)
    counted = probes.restart_count(name_pattern=f"{containers.prefix}-.*")
    assert counted["containers"][steady["name"]] == 0
    assert counted["restart_count"] == counted["containers"][box["name"]] >= 1


def test_probe_arguments_are_checked():
    with pytest.raises(ActivityFailed, match="at least one of"):
        probes.containers_running()
    with pytest.raises(ActivityFailed, match="argument 'timeout'"):
        probes.time_until_healthy(name="x", timeout="soon")
