"""The fault ledger with real processes: record before apply, idempotent undo, ttl."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chaoslib.exceptions import ActivityFailed
from sandbox_fixtures import pid_alive, wait_until

from chaospika import ledger
from chaospika.ledger import store
from chaospika.process.actions import (
    kill_process,
    pause_process,
    resume_process,
    start_process,
)
from chaospika.process.probes import process_running

CHAOSPIKA = Path(sys.executable).with_name("chaospika")


@pytest.fixture
def sleeper(tmp_path):
    """A `sleep 60` started through start_process, so its pidfile has a record."""
    pidfile = str(tmp_path / "sleeper.pid")
    start_process(pidfile, command=["sleep", "60"], timeout=0.1)
    yield pidfile
    for path in (pidfile,):
        try:
            pid = int(Path(path).read_text())
        except (OSError, ValueError):
            continue
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def pid_of(pidfile: str) -> int:
    return int(Path(pidfile).read_text())


def cleanup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHAOSPIKA), "cleanup", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_kill_is_recorded_before_it_is_applied_and_closed_by_the_restart(sleeper):
    victim = pid_of(sleeper)
    result = kill_process(sleeper)
    assert result["killed"] is True and result["undoable"] is True
    fault = ledger.get(result["fault"])
    assert fault.state == "applied" and fault.data["target"]["pid"] == victim
    assert fault.data["created_at"] <= fault.data["applied_at"]
    assert [f.id for f in ledger.outstanding()] == [fault.id]

    start_process(sleeper)
    assert ledger.get(fault.id).state == "undone"
    assert ledger.get(fault.id).data["undone_by"] == "start_process"
    assert ledger.outstanding() == []


def test_cleanup_restores_a_killed_process_and_is_safe_twice(sleeper):
    fault = kill_process(sleeper)["fault"]
    assert process_running(sleeper) is False

    listed = cleanup("--dry-run")
    assert listed.returncode == 0 and f"would undo {fault}" in listed.stdout
    assert process_running(sleeper) is False  # a dry run applies nothing

    done = cleanup()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"undone {fault}" in done.stdout
    assert process_running(sleeper) is True
    again = cleanup()
    assert again.returncode == 0 and "nothing to undo" in again.stdout
    assert ledger.undo(fault)["already"] is True


def test_a_failing_undo_raises_and_stays_outstanding(sleeper):
    fault = kill_process(sleeper)["fault"]
    record = Path(sleeper + ".cmd.json")
    data = json.loads(record.read_text())
    data["argv"] = ["/nonexistent/program"]
    record.write_text(json.dumps(data))

    with pytest.raises(ActivityFailed, match="undo of .* failed"):
        ledger.undo(fault)
    assert ledger.get(fault).state == "failed"
    assert [f.id for f in ledger.outstanding()] == [fault]
    done = cleanup()
    assert done.returncode == 1 and f"FAILED {fault}" in done.stdout


def test_a_pause_is_undone_by_cleanup(sleeper):
    paused = pause_process(sleeper)
    assert paused["paused"] is True
    assert cleanup().returncode == 0
    with open(f"/proc/{pid_of(sleeper)}/stat") as handle:
        assert handle.read().rsplit(")", 1)[1].split()[0] != "T"
    assert ledger.outstanding() == []


def test_resume_process_closes_the_pause(sleeper):
    fault = pause_process(sleeper)["fault"]
    resume_process(sleeper)
    assert ledger.get(fault).state == "undone"


def test_ttl_restarts_the_process_after_its_owner_was_sigkilled(sleeper):
    """The dead man's switch: nobody is left to undo, the watchdog does it."""
    victim = pid_of(sleeper)
    code = (
        "import os, signal\n"
        "from chaospika.process.actions import kill_process\n"
        f"kill_process({sleeper!r}, ttl=1.0)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    owner = subprocess.run(
        [sys.executable, "-c", code], timeout=60, check=False, capture_output=True
    )
    assert owner.returncode == -signal.SIGKILL
    assert not pid_alive(victim)
    began = time.monotonic()
    wait_until(lambda: process_running(sleeper), timeout=10, step=0.1)
    assert time.monotonic() - began < 5
    assert pid_of(sleeper) != victim
    wait_until(lambda: ledger.outstanding() == [], timeout=5)


def test_ttl_waits_while_the_owner_still_runs(sleeper):
    fault = kill_process(sleeper, ttl="300ms")["fault"]
    watchdog = ledger.get(fault).data["watchdog_pid"]
    time.sleep(1.2)
    assert process_running(sleeper) is False  # this test process could still undo
    ledger.undo(fault)
    assert process_running(sleeper) is True
    wait_until(lambda: not pid_alive(watchdog), timeout=5)


def test_a_kill_by_pid_alone_is_recorded_as_not_undoable(tmp_path):
    process = subprocess.Popen(["sleep", "60"])
    try:
        result = kill_process(pid=process.pid)
        assert result["killed"] is True and result["undoable"] is False
        with pytest.raises(ActivityFailed, match="cannot be undone"):
            ledger.undo(result["fault"])
    finally:
        process.kill()
        process.wait()


def test_prune_deletes_only_old_undone_records_and_their_files(tmp_path):
    done = ledger.record("test.fault", {"where": "a"}, None)
    ledger.resolve("test.fault", {"where": "a"}, "test")
    still_open = ledger.record("test.fault", {"where": "b"}, None)
    snapshot = Path(store.ledger_dir()) / "snapshots" / f"{done.id}.dump"
    snapshot.parent.mkdir()
    snapshot.write_bytes(b"saved keys")

    assert ledger.prune(3600) == []  # undone just now: kept
    assert ledger.prune(0, now=time.time() + 1) == [done.id]
    assert ledger.get(done.id) is None and not snapshot.exists()
    assert ledger.get(still_open.id).open  # open records are never pruned


def test_cleanup_prune_from_the_command_line():
    done = ledger.record("test.fault", {"where": "c"}, None)
    ledger.resolve("test.fault", {"where": "c"}, "test")
    chaospika = Path(sys.executable).with_name("chaospika")
    printed = subprocess.run(
        [str(chaospika), "cleanup", "--prune", "0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pruned 1 undone record(s)" in printed
    assert ledger.get(done.id) is None
    refused = subprocess.run(
        [str(chaospika), "cleanup", "--prune", "soon"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2 and "must be an age" in refused.stderr
