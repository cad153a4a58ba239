"""Process actions and probes against real processes named by pidfiles in tmp_path."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from chaoslib.discovery.discover import discover_actions, discover_probes
from chaoslib.exceptions import ActivityFailed

from chaospika._ports import free_port
from chaospika.process.actions import (
    kill_process,
    pause_process,
    restart_process,
    resume_process,
    start_process,
)
from chaospika.process.probes import process_info, process_running
from chaospika.sandbox.redis_server import start_redis

SERVICE = "import os, time; print('up', os.environ.get('PIKA_MARK'), flush=True); "
SERVICE += "time.sleep(60)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
STUBBORN += "print('ready', flush=True); time.sleep(60)"


@pytest.fixture
def owned():
    """Pids the test started; any still alive are SIGKILLed by pid at the end."""
    pids = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launch(tmp_path, owned, code=SERVICE, name="svc"):
    """Start a python service by hand (as a user's system would) and write its pidfile."""
    log = tmp_path / f"{name}.log"
    with open(log, "ab") as output:
        child = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env={**os.environ, "PIKA_MARK": "mark-42"},
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    owned.append(child.pid)
    pidfile = tmp_path / f"{name}.pid"
    pidfile.write_text(f"{child.pid}\n")
    wait_for_line(log, "up" if code == SERVICE else "ready")
    return child, str(pidfile), str(log)


def wait_for_line(path, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and text in read(path):
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


def read(path):
    with open(path) as handle:
        return handle.read()


def environ_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as handle:
        pairs = handle.read().decode().split("\0")
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def test_kill_records_command_then_start_restores_it_exactly(tmp_path, owned):
    child, pidfile, log = launch(tmp_path, owned)
    assert process_running(pidfile) is True

    result = kill_process(pidfile)

    assert result["killed"] is True and result["exited"] is True
    assert result["signal"] == "SIGKILL" and result["pid"] == child.pid
    assert child.wait(5) == -signal.SIGKILL
    assert process_running(pidfile) is False
    recorded = json.loads(read(pidfile + ".cmd.json"))
    assert recorded["argv"] == [sys.executable, "-c", SERVICE]
    assert recorded["cwd"] == str(tmp_path)
    assert recorded["env"]["PIKA_MARK"] == "mark-42"
    assert recorded["log"] == log
    assert os.stat(pidfile + ".cmd.json").st_mode & 0o777 == 0o600

    again = kill_process(pidfile)
    assert again["killed"] is False and "not running" in again["reason"]

    started = start_process(pidfile)
    owned.append(started["pid"])
    assert started["started"] is True and started["pid"] != child.pid
    assert read(pidfile).strip() == str(started["pid"])
    assert process_running(pidfile) is True
    assert os.readlink(f"/proc/{started['pid']}/cwd") == str(tmp_path)
    assert environ_of(started["pid"])["PIKA_MARK"] == "mark-42"
    wait_for_line(log, "up mark-42\nup mark-42")

    twice = start_process(pidfile)
    assert twice == {"started": False, "already_running": True, "pid": started["pid"]}


def test_restored_environment_is_not_mixed_with_the_callers(
    tmp_path, owned, monkeypatch
):
    _, pidfile, _ = launch(tmp_path, owned)
    kill_process(pidfile)
    monkeypatch.setenv("PIKA_ONLY_IN_CHAOS", "1")
    started = start_process(pidfile)
    owned.append(started["pid"])
    assert "PIKA_ONLY_IN_CHAOS" not in environ_of(started["pid"])


def test_sigterm_on_a_process_started_by_start_process_is_reaped(tmp_path, owned):
    pidfile = str(tmp_path / "sleeper.pid")
    started = start_process(
        pidfile,
        command=["sleep", "60"],
        env={"PIKA_MARK": "x"},
        log_file=str(tmp_path / "sleeper.log"),
    )
    owned.append(started["pid"])

    result = kill_process(pidfile, signal="SIGTERM")

    assert result["killed"] is True and result["exited"] is True
    assert process_info(pidfile)["running"] is False
    recorded = json.loads(read(pidfile + ".cmd.json"))
    assert recorded["argv"] == ["sleep", "60"] and recorded["env"] == {"PIKA_MARK": "x"}
    assert recorded["inherit_env"] is True


def test_a_rewritten_command_line_is_not_recorded(tmp_path, owned):
    """redis-server replaces its argv with a title: restarting needs a command."""
    server = start_redis(free_port(), str(tmp_path / "redis"))
    owned.append(server.pid)
    pidfile = tmp_path / "redis.pid"
    pidfile.write_text(f"{server.pid}\n")

    result = kill_process(str(pidfile))

    assert result["killed"] is True and result["recorded"] is None
    assert server.wait(5) == -signal.SIGKILL
    assert not os.path.exists(f"{pidfile}.cmd.json")
    with pytest.raises(ActivityFailed, match="'command' is required"):
        start_process(str(pidfile))


def test_an_unusable_record_is_reported(tmp_path):
    pidfile = str(tmp_path / "svc.pid")
    with open(pidfile + ".cmd.json", "w") as handle:
        json.dump({"argv": [], "cwd": str(tmp_path)}, handle)
    with pytest.raises(ActivityFailed, match=r"svc\.pid\.cmd\.json.*'argv' list"):
        start_process(pidfile)
    assert not os.path.exists(pidfile)


def test_kill_by_pid_and_signal_names(tmp_path, owned):
    child, pidfile, _ = launch(tmp_path, owned)
    result = kill_process(pid=child.pid, signal="term")
    assert result["signal"] == "SIGTERM" and result["exited"] is True
    assert not os.path.exists(pidfile + ".cmd.json")
    assert kill_process(pid=child.pid)["killed"] is False


def test_reused_pid_is_neither_running_nor_killed(tmp_path, owned):
    child, pidfile, _ = launch(tmp_path, owned)
    past = time.time() - 3600
    os.utime(pidfile, (past, past))

    assert process_running(pidfile) is False
    result = kill_process(pidfile)
    assert result["killed"] is False and "reused" in result["reason"]
    assert child.poll() is None


def test_pause_and_resume_are_safe_twice(tmp_path, owned):
    _, pidfile, _ = launch(tmp_path, owned)

    paused = pause_process(pidfile)
    assert paused == {
        "pid": int(read(pidfile)),
        "paused": True,
        "was_paused": False,
        "fault": paused["fault"],
    }
    again = pause_process(pidfile)
    assert again["was_paused"] is True and "fault" not in again
    info = process_info(pidfile)
    assert info["paused"] is True and info["state"] == "stopped"
    assert process_running(pidfile) is True

    assert resume_process(pidfile)["resumed"] is True
    assert resume_process(pidfile)["was_paused"] is False
    assert process_info(pidfile)["paused"] is False

    kill_process(pidfile)
    assert resume_process(pidfile)["resumed"] is False
    assert pause_process(pidfile)["paused"] is False
    assert resume_process(str(tmp_path / "missing.pid"))["resumed"] is False


def test_restart_process_and_escalation_to_sigkill(tmp_path, owned):
    _, pidfile, _ = launch(tmp_path, owned, code=STUBBORN, name="stubborn")

    result = restart_process(pidfile, stop_timeout=0.3)

    owned.append(result["pid"])
    assert result["escalated_to_sigkill"] is True and result["started"] is True
    assert result["previous_pid"] != result["pid"]
    assert process_running(pidfile) is True

    second = restart_process(pidfile, signal="SIGKILL")
    owned.append(second["pid"])
    assert second["escalated_to_sigkill"] is False
    assert second["previous_pid"] == result["pid"]


def test_process_info_of_a_running_process(tmp_path, owned):
    child, pidfile, _ = launch(tmp_path, owned)
    info = process_info(pidfile)
    assert info["pid"] == child.pid and info["running"] is True
    assert info["argv"] == [sys.executable, "-c", SERVICE]
    assert info["state"] in ("sleeping", "running")
    assert 0 <= info["uptime_seconds"] < 30 and info["rss_bytes"] > 0
    assert json.dumps(info)


def test_missing_pidfile_is_a_fact_for_probes(tmp_path):
    missing = str(tmp_path / "none.pid")
    assert process_running(missing) is False
    assert process_info(missing)["running"] is False


def test_start_failure_reports_the_log_tail(tmp_path):
    pidfile = str(tmp_path / "crash.pid")
    with pytest.raises(ActivityFailed, match=r"code 3[\s\S]*boom-7"):
        start_process(
            pidfile,
            command=[sys.executable, "-c", "print('boom-7'); raise SystemExit(3)"],
            log_file=str(tmp_path / "crash.log"),
            timeout=1.0,
        )


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda p: kill_process(str(p / "absent.pid")), "pidfile"),
        (lambda p: kill_process(pid="abc"), "pid"),
        (lambda p: kill_process(pid=-5), "pid"),
        (lambda p: kill_process(pid=1), "pid"),
        (lambda p: kill_process(pid=os.getpid()), "pid"),
        (lambda p: kill_process(pid=12345, signal="SIGBOGUS"), "signal"),
        (lambda p: kill_process(pid=12345, timeout=-1), "timeout"),
        (lambda p: kill_process(), "pidfile' or 'pid"),
        (lambda p: kill_process(pidfile=str(p / "x.pid"), pid=3), "pidfile' or 'pid"),
        (lambda p: process_running(str(p / "garbage.pid")), "pidfile"),
        (lambda p: process_info(pid="x"), "pid"),
        (lambda p: pause_process(), "pidfile' or 'pid"),
        (lambda p: resume_process(str(p / "garbage.pid")), "pidfile"),
        (lambda p: start_process(str(p / "new.pid")), "command"),
        (lambda p: start_process(str(p / "new.pid"), command="sleep 1"), "command"),
        (
            lambda p: start_process(str(p / "new.pid"), command=["sleep"], env="A=1"),
            "env",
        ),
        (
            lambda p: start_process(str(p / "new.pid"), ["sleep"], cwd=str(p / "nope")),
            "cwd",
        ),
        (lambda p: start_process("", command=["sleep"]), "pidfile"),
        (
            lambda p: restart_process(str(p / "n.pid"), stop_timeout="soon"),
            "stop_timeout",
        ),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, call, argument):
    (tmp_path / "garbage.pid").write_text("not-a-pid\n")
    with pytest.raises(ActivityFailed, match=f"'{argument}'"):
        call(tmp_path)


def test_unknown_executable_fails_cleanly(tmp_path):
    with pytest.raises(ActivityFailed, match="cannot start"):
        start_process(str(tmp_path / "n.pid"), command=["/nonexistent/pika-binary"])
    assert not os.path.exists(tmp_path / "n.pid")
    with pytest.raises(ActivityFailed, match="cannot start 'sleep' .*no-folder"):
        start_process(
            str(tmp_path / "n.pid"),
            command=["sleep", "1"],
            log_file=str(tmp_path / "no-folder" / "x.log"),
        )


def test_discovery_reports_plain_argument_types():
    actions = {
        item["name"]: item for item in discover_actions("chaospika.process.actions")
    }
    assert set(actions) == {
        "kill_process",
        "start_process",
        "restart_process",
        "pause_process",
        "resume_process",
    }
    kinds = {
        arg["name"]: arg.get("type") for arg in actions["kill_process"]["arguments"]
    }
    assert kinds["pidfile"] == "string" and kinds["pid"] == "integer"
    probes = {item["name"] for item in discover_probes("chaospika.process.probes")}
    assert probes == {"process_running", "process_info"}
