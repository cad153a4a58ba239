"""SIGINT, SIGTERM and SIGKILL of `chaos run experiments/worker-crash.json` mid-method.

The safety control (declared in the experiment) stops the load and undoes the
run's faults before chaos writes its journal; after a SIGKILL the fault ledger
lets `chaospika cleanup`, or the ttl watchdog, put the worker back.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from chaos_runs import (
    CHAOSPIKA,
    EXPERIMENT,
    chaos_argv,
    ledger_files,
    sandbox_env,
    verdict,
)
from sandbox_fixtures import pid_alive, wait_until

from chaospika import _proc
from chaospika.ledger import store
from chaospika.process.probes import process_running
from chaospika.redis.actions import wait_for_drain
from chaospika.sandbox import schema

pytestmark = pytest.mark.slow


def start_chaos(
    state: dict, folder: Path, experiment: Path = EXPERIMENT
) -> subprocess.Popen:
    """Start `chaos run` on the sandbox; journal and log in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "chaos.out", "ab") as output:
        return subprocess.Popen(
            chaos_argv(folder, experiment),
            env=sandbox_env(state),
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def worker_pid(state: dict) -> int | None:
    return _proc.read_pid(state["pidfiles"]["worker"])


def wait_for_the_kill(chaos: subprocess.Popen, pid: int) -> None:
    """Poll until the worker `pid` is dead (the method's kill happened)."""
    wait_until(lambda: not pid_alive(pid) or chaos.poll() is not None, 60, 0.01)
    assert chaos.poll() is None, "chaos ended before the kill"


def wait_for_the_restart(chaos: subprocess.Popen, state: dict, pid: int) -> None:
    """Poll until the method restarted the worker (a new live pid in the pidfile)."""

    def restarted() -> bool:
        new = worker_pid(state)
        return chaos.poll() is not None or (new != pid and pid_alive(new or 0))

    wait_until(restarted, 60, 0.01)
    assert chaos.poll() is None, "chaos ended before the restart"


def cleanup() -> subprocess.CompletedProcess:
    """`chaospika cleanup` (the ledger folder comes with the environment)."""
    return subprocess.run(
        [str(CHAOSPIKA), "cleanup"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_nothing_left(state: dict) -> None:
    """Every fault record is undone, cleanup finds nothing, the worker drains the stream."""
    for name in ledger_files():
        record = json.loads((Path(store.ledger_dir()) / name).read_text())
        assert record["state"] == "undone", record
    again = cleanup()
    assert again.returncode == 0 and "nothing to undo" in again.stdout, again.stdout
    wait_for_drain(state["redis_url"], schema.STREAM, schema.GROUP, timeout=90)
    assert process_running(state["pidfiles"]["worker"]) is True


def assert_a_next_run_passes(state: dict, folder: Path) -> None:
    # The worker may still be catching up on the interrupted run's orders: that
    # is its job, not something chaos left behind. The next run starts after it.
    wait_for_drain(state["redis_url"], schema.STREAM, schema.GROUP, timeout=90)
    chaos = start_chaos(state, folder)
    assert chaos.wait(240) == 0, (folder / "chaos.out").read_text()[-3000:]
    assert verdict(folder / "journal.json") == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
@pytest.mark.parametrize("moment", ["right-after-the-kill", "during-the-recovery"])
def test_a_signal_mid_method_undoes_the_fault_and_writes_the_journal(
    signum, moment, make_sandbox, tmp_path
):
    state = make_sandbox(tmp_path)
    first = worker_pid(state)
    chaos = start_chaos(state, tmp_path / "interrupted")
    try:
        wait_for_the_kill(chaos, first)
        if moment == "during-the-recovery":
            wait_for_the_restart(chaos, state, first)
            time.sleep(1.0)  # past the restart's 0.5 s check: inside `recovery-time`
        sent = time.monotonic()
        chaos.send_signal(signum)
        chaos.wait(5)
        took = time.monotonic() - sent
    finally:
        if chaos.poll() is None:
            chaos.kill()
            chaos.wait()
    output = (tmp_path / "interrupted" / "chaos.out").read_text()
    assert took < 5, output[-3000:]
    print(f"chaos exited {took:.2f} s after {signal.Signals(signum).name} ({moment})")

    # the worker runs again and nothing of the run is left in force
    assert process_running(state["pidfiles"]["worker"]) is True
    journal = json.loads((tmp_path / "interrupted" / "journal.json").read_text())
    assert journal["status"] == "interrupted"
    safety = journal["pika_safety"]
    assert safety["signal"] == signal.Signals(signum).name
    assert safety["errors"] == [] and safety["outstanding"] == []
    kills = [f for f in journal["pika_faults"] if f["kind"] == "process.kill"]
    assert len(kills) == 1 and kills[0]["target"]["pid"] == first
    assert kills[0]["state"] == "undone"
    if moment == "right-after-the-kill":
        # the load was running and the kill in force: the control did both
        assert safety["loads_stopped_at_signal"] >= 1
        assert kills[0]["undone_by"] == "safety"
    else:
        assert journal["run"][-1]["activity"]["name"] == "recovery-time"
        assert kills[0]["undone_by"] == "start_process"
    assert journal["pika_run_id"] == safety["run_id"] == kills[0]["run_id"]
    assert journal["rollbacks"] == []  # the default strategy skips them
    assert verdict(tmp_path / "interrupted" / "journal.json") == 6

    # chaos is gone, so is its in-process load: nothing is left in force
    assert_nothing_left(state)
    if (moment, signum) == ("right-after-the-kill", signal.SIGINT):
        # the case where the control did the most (load and kill in force):
        # a whole next run passes, as a user would run it again
        assert_a_next_run_passes(state, tmp_path / "next")


def test_sigkill_of_chaos_then_cleanup_restores_the_worker(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path)
    first = worker_pid(state)
    chaos = start_chaos(state, tmp_path / "killed")
    try:
        wait_for_the_kill(chaos, first)
        time.sleep(0.2)  # the kill is recorded "applied" once the worker is gone
    finally:
        chaos.kill()
        chaos.wait()
    assert process_running(state["pidfiles"]["worker"]) is False
    assert len(ledger_files()) == 1

    done = cleanup()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "undone process-kill" in done.stdout
    assert process_running(state["pidfiles"]["worker"]) is True
    again = cleanup()
    assert again.returncode == 0 and "nothing to undo" in again.stdout


def test_sigkill_of_chaos_with_a_ttl_brings_the_worker_back_by_itself(
    make_sandbox, tmp_path
):
    experiment = json.loads(EXPERIMENT.read_text())
    for activity in experiment["method"]:
        if activity["name"] == "kill-inventory-worker":
            activity["provider"]["arguments"]["ttl"] = 2
    copy = tmp_path / "worker-crash-ttl.json"
    copy.write_text(json.dumps(experiment))
    state = make_sandbox(tmp_path)
    first = worker_pid(state)
    chaos = start_chaos(state, tmp_path / "killed", copy)
    try:
        wait_for_the_kill(chaos, first)
    finally:
        chaos.kill()
        chaos.wait()  # reaped: its pid is gone for the watchdog
    killed_at = time.monotonic()
    assert process_running(state["pidfiles"]["worker"]) is False

    wait_until(lambda: process_running(state["pidfiles"]["worker"]), 10, 0.05)
    assert time.monotonic() - killed_at < 2 + 3
    (name,) = ledger_files()

    def record() -> dict:
        return json.loads((Path(store.ledger_dir()) / name).read_text())

    wait_until(lambda: record()["state"] == "undone", 5, 0.05)
    assert record()["undone_by"] == "ttl"
