"""Container faults against the real engine: each is recorded, applied, undone; a
selection that is empty or too wide touches nothing."""

import inspect
import logging
import signal
import threading
import time

import pytest
from chaoslib.discovery.discover import discover_activities
from chaoslib.exceptions import ActivityFailed

from chaospika import ledger
from chaospika.controls import _faults
from chaospika.docker import actions


def open_faults() -> list:
    return ledger.outstanding()


def test_stop_is_recorded_first_undone_by_the_ledger_twice_safely(containers, caplog):
    box = containers.make("a")
    caplog.set_level(logging.INFO, logger="chaostoolkit")

    result = actions.stop_containers(name=box["name"], timeout=5)

    assert result["touched_count"] == 1 and result["matched_count"] == 1
    (touched,) = result["containers"]
    assert touched["name"] == box["name"] and touched["id"] == box["id"]
    assert touched["status_before"] == "running" and touched["status"] == "exited"
    assert containers.status(box["name"]) == "exited"
    announced = [
        r.getMessage() for r in caplog.records if "about to stop" in r.getMessage()
    ]
    assert announced and box["name"] in announced[0]
    assert "undo: start it again" in announced[0]
    (fault,) = open_faults()
    assert fault.data["kind"] == "docker.stop" and fault.state == "applied"
    assert fault.data["target"]["id"] == box["id"]

    first = ledger.undo(fault.id)
    assert first["result"]["started"] is True
    assert containers.status(box["name"]) == "running"
    assert ledger.undo(fault.id)["already"] is True
    # the undo function itself is idempotent too
    again = actions.undo_stop(**fault.data["undo"]["args"])
    assert again["started"] is False and again["already_running"] is True


def test_start_containers_is_the_rollback_and_resolves_the_fault(containers):
    box = containers.make("a")
    actions.stop_containers(name=box["name"], timeout=5)

    started = actions.start_containers(name=box["name"])

    assert [c["name"] for c in started["containers"]] == [box["name"]]
    assert containers.status(box["name"]) == "running"
    assert open_faults() == []
    noop = actions.start_containers(name=box["name"])
    assert noop["touched_count"] == 0 and noop["already_running"] == [box["name"]]
    with pytest.raises(ActivityFailed, match="no container matches"):
        actions.start_containers(name=f"{containers.prefix}-missing")


def test_kill_waits_for_the_exit_and_its_undo_starts_the_container(containers):
    box = containers.make("a")

    result = actions.kill_containers(name=box["name"], signal="SIGKILL", ttl=60)

    (touched,) = result["containers"]
    assert touched["signal"] == "SIGKILL" and touched["exited"] is True
    assert containers.status(box["name"]) == "exited"
    (fault,) = open_faults()
    assert fault.data["kind"] == "docker.kill" and fault.data["watchdog_pid"] > 0
    # the watchdog was not started while SIGINT/SIGTERM were held: it can be stopped
    with open(f"/proc/{fault.data['watchdog_pid']}/status") as status:
        (blocked,) = [line for line in status if line.startswith("SigBlk:")]
    held = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    assert int(blocked.split()[1], 16) & held == 0
    assert ledger.undo(fault.id)["result"]["started"] is True
    assert containers.status(box["name"]) == "running"


def test_pause_and_unpause(containers):
    one, two = containers.make("a"), containers.make("b")

    actions.pause_containers(name=one["name"])
    actions.pause_containers(name=two["name"])
    assert containers.status(one["name"]) == containers.status(two["name"]) == "paused"
    assert {f.data["kind"] for f in open_faults()} == {"docker.pause"}

    (by_ledger,) = [f for f in open_faults() if f.data["target"]["id"] == one["id"]]
    assert ledger.undo(by_ledger.id)["result"]["unpaused"] is True
    result = actions.unpause_containers(name_pattern=f"{containers.prefix}-.")
    assert [c["name"] for c in result["containers"]] == [two["name"]]
    assert containers.status(one["name"]) == containers.status(two["name"]) == "running"
    assert open_faults() == []


def test_restart_ends_running_and_leaves_nothing_open(containers):
    box = containers.make("a")
    before = containers.client.inspect_container(box["id"])["State"]["StartedAt"]

    result = actions.restart_containers(name=box["name"], timeout=5)

    assert result["containers"][0]["status"] == "running"
    after = containers.client.inspect_container(box["id"])["State"]["StartedAt"]
    assert after != before
    assert open_faults() == []


def test_empty_or_too_wide_selections_touch_nothing(containers):
    boxes = [containers.make(str(i), labels={"pika.group": "g"}) for i in range(3)]
    label = f"io.chaospika.test={containers.token},pika.group=g"

    with pytest.raises(ActivityFailed, match="more than max_targets=1"):
        actions.stop_containers(selector=label, mode="all")
    with pytest.raises(ActivityFailed, match="more than max_targets=2"):
        actions.pause_containers(selector=label, mode="percent", qty=100, max_targets=2)
    with pytest.raises(ActivityFailed, match="selects no container"):
        actions.kill_containers(selector=label, mode="percent", qty=10)
    with pytest.raises(ActivityFailed, match="no container matches"):
        actions.stop_containers(name_pattern=f"{containers.prefix}-9")
    with pytest.raises(ActivityFailed, match="asks for 4 containers"):
        actions.stop_containers(selector=label, mode="fixed", qty=4, max_targets=4)

    assert all(containers.status(b["name"]) == "running" for b in boxes)
    assert ledger.records.store.load_all() == []


def test_fixed_selection_with_a_seed_and_cleanup_of_all(containers):
    for i in range(3):
        containers.make(str(i))
    pattern = f"{containers.prefix}-[0-9]"

    first = actions.pause_containers(
        name_pattern=pattern, mode="fixed", qty=2, seed=3, max_targets=2
    )
    paused = sorted(c["name"] for c in first["containers"])
    assert len(paused) == 2 and first["eligible_count"] == 3
    names = [f"{containers.prefix}-{i}" for i in range(3)]
    assert [n for n in names if containers.status(n) == "paused"] == paused

    reports = ledger.undo_outstanding(by="cleanup")
    assert len(reports) == 2 and all(r["undone"] for r in reports)
    again = actions.pause_containers(
        name_pattern=pattern, mode="fixed", qty=2, seed=3, max_targets=2
    )
    assert sorted(c["name"] for c in again["containers"]) == paused
    ledger.undo_outstanding(by="cleanup")
    assert all(containers.status(n) == "running" for n in paused)


def test_an_undo_during_a_stop_still_going_on_waits_for_it(containers):
    # chaos SIGKILLed mid-stop, cleanup at once: the engine is still stopping the
    # container (sleep as PID 1 ignores SIGTERM: the stop takes its 2 s timeout)
    box = containers.make("slow", init=False)
    since = time.time()
    stopper = threading.Thread(
        target=containers.client.stop, args=(box["id"],), kwargs={"timeout": 2}
    )
    stopper.start()
    try:
        time.sleep(0.3)
        assert containers.status(box["name"]) == "running"
        report = actions.undo_stop(
            box["id"], box["name"], "unix:///var/run/docker.sock", since, wait=7
        )
    finally:
        stopper.join()
    assert report["started"] is True
    assert containers.status(box["name"]) == "running"


def test_undo_of_a_removed_container_is_not_an_error(containers):
    box = containers.make("a")
    actions.stop_containers(name=box["name"], timeout=5)
    containers.client.remove_container(box["id"], force=True)
    (fault,) = open_faults()

    report = ledger.undo(fault.id)

    assert report["result"]["started"] is False
    assert report["result"]["reason"] == "container removed"


def test_the_safety_control_resolves_docker_targets(containers):
    boxes = [containers.make(str(i), labels={"pika.group": "g"}) for i in range(2)]
    stop = _faults.FAULTS["chaospika.docker.actions.stop_containers"]
    policy = _faults.Policy()

    entry, refusals = _faults.check_fault(
        "stop-one", stop, {"name": boxes[0]["name"]}, policy, live=True
    )
    assert refusals == []
    assert [t["container"] for t in entry["targets"]] == [boxes[0]["name"]]
    assert "undo_stop" in entry["undo"]

    label = f"io.chaospika.test={containers.token}"
    _, wide = _faults.check_fault(
        "stop-all", stop, {"selector": label, "mode": "all"}, policy, live=True
    )
    assert wide and "more than max_targets=1" in wide[0]
    _, none = _faults.check_fault(
        "stop-none", stop, {"name": "pika-test-no-such"}, policy, live=True
    )
    assert none and "no container matches" in none[0]
    _, remote = _faults.check_fault(
        "stop-remote",
        stop,
        {"name": boxes[0]["name"], "docker_url": "tcp://10.1.2.3:2375"},
        policy,
        live=True,
    )
    assert remote and "loopback" in remote[0]
    assert all(containers.status(b["name"]) == "running" for b in boxes)


def test_activities_are_discoverable_and_follow_the_conventions():
    from chaospika.docker import probes

    for module in (actions, probes):
        for name in module.__all__:
            func = getattr(module, name)
            assert (func.__doc__ or "").strip(), name
            params = list(inspect.signature(func).parameters.values())
            assert [p.name for p in params[-2:]] == ["configuration", "secrets"]
            assert all(p.annotation is not inspect.Parameter.empty for p in params)
    found = discover_activities("chaospika.docker.actions", "action")
    assert {a["name"] for a in found} == set(actions.__all__)
    probes = discover_activities("chaospika.docker.probes", "probe")
    assert {p["name"] for p in probes} == {
        "container_status",
        "containers_running",
        "restart_count",
        "time_until_healthy",
    }
