"""The process guard: faults refuse ancestors, threads, kernel threads and reused pids.

Real processes only; everything started here is ended by pid.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaoslib.exceptions import ActivityFailed

from chaospika._ports import free_port
from chaospika.process._guard import _matches
from chaospika.process.actions import (
    kill_process,
    pause_process,
    restart_process,
    resume_process,
    start_process,
)
from chaospika.process.probes import process_running
from chaospika.sandbox.redis_server import redis_command, start_redis

REPO = str(Path(__file__).resolve().parent.parent)
# Names its parent (the launcher) in a pidfile and tries to SIGKILL and SIGSTOP it.
WORKER = """
import os, sys
from chaoslib.exceptions import ActivityFailed
from chaospika.process.actions import kill_process, pause_process
with open(sys.argv[1], "w") as handle:
    handle.write(f"{os.getppid()}\\n")
for attempt in (lambda: kill_process(sys.argv[1]), lambda: pause_process(sys.argv[1])):
    try:
        attempt()
        print("NOT REFUSED", flush=True)
    except ActivityFailed as error:
        print("refused:", error, flush=True)
"""
LAUNCHER = """
import subprocess, sys, time
code = subprocess.call([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print("worker exited", code, flush=True)
time.sleep(60)
"""
THREADED = """
import threading, time
def run():
    print("tid", threading.get_native_id(), flush=True)
    time.sleep(60)
threading.Thread(target=run, daemon=True).start()
time.sleep(60)
"""


@pytest.fixture
def owned() -> Iterator[list[int]]:
    """Pids the test started; any still alive are SIGKILLed by pid at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    """Tell whether `pid` runs (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def wait_for(path: Path, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


def spawn(argv: list[str], log: Path, owned: list[int]) -> subprocess.Popen:
    with open(log, "ab") as output:
        child = subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": REPO},
        )
    owned.append(child.pid)
    return child


def pidfile_of(tmp_path: Path, pid: int, name: str = "target") -> str:
    path = tmp_path / f"{name}.pid"
    path.write_text(f"{pid}\n")
    return str(path)


def test_the_parent_of_the_caller_is_refused_and_survives(tmp_path, owned):
    log = tmp_path / "launcher.log"
    pidfile = str(tmp_path / "parent.pid")
    launcher = spawn([sys.executable, "-c", LAUNCHER, WORKER, pidfile], log, owned)

    content = wait_for(log, "worker exited")

    assert "worker exited 0" in content and "NOT REFUSED" not in content
    refusals = [line for line in content.splitlines() if line.startswith("refused")]
    assert len(refusals) == 2
    for line in refusals:
        assert f"pid {launcher.pid} is an ancestor of this process (python" in line
    assert launcher.poll() is None and alive(launcher.pid)
    assert not os.path.exists(pidfile + ".cmd.json")


def test_every_ancestor_of_the_test_process_is_refused(tmp_path):
    """SIGCONT: harmless should the guard ever let it through."""
    parent = os.getppid()
    pidfile = pidfile_of(tmp_path, parent)
    with pytest.raises(ActivityFailed, match=f"pid {parent} is an ancestor"):
        kill_process(pidfile, signal="SIGCONT")
    assert not os.path.exists(pidfile + ".cmd.json")
    assert alive(parent)
    with open(f"/proc/{parent}/stat") as handle:
        grandparent = int(handle.read().rsplit(")", 1)[1].split()[1])
    if grandparent > 1:
        with pytest.raises(ActivityFailed, match=f"pid {grandparent} is an ancestor"):
            resume_process(pid=grandparent)


def test_a_thread_of_the_test_process_is_refused(tmp_path):
    ready, release = threading.Event(), threading.Event()
    tids: list[int] = []

    def run() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        release.wait(30)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(5)
        tid = tids[0]
        assert tid != os.getpid()
        pidfile = pidfile_of(tmp_path, tid)
        expected = f"pid {tid} is a thread of this process .*pid {os.getpid()}"
        with pytest.raises(ActivityFailed, match=expected):
            kill_process(pidfile)
        with pytest.raises(ActivityFailed, match=expected):
            pause_process(pid=tid)
        assert not os.path.exists(pidfile + ".cmd.json")
        assert thread.is_alive()
    finally:
        release.set()
        thread.join(5)


def test_a_thread_of_another_process_is_refused(tmp_path, owned):
    log = tmp_path / "threaded.log"
    child = spawn([sys.executable, "-c", THREADED], log, owned)
    tid = int(wait_for(log, "tid").split()[1])

    with pytest.raises(
        ActivityFailed, match=f"pid {tid} is a thread of process {child.pid}"
    ):
        kill_process(pidfile_of(tmp_path, tid))
    with pytest.raises(ActivityFailed, match=f"thread of process {child.pid}"):
        kill_process(pid=tid, signal="SIGTERM")
    assert child.poll() is None
    assert kill_process(pid=child.pid)["exited"] is True


def kernel_threads() -> list[int]:
    """Return kthreadd (pid 2) and one of its kernel threads, if /proc shows them."""
    try:
        with open("/proc/2/comm") as handle:
            if handle.read().strip() != "kthreadd":
                return []
    except FileNotFoundError:
        return []
    for name in sorted(os.listdir("/proc"), key=lambda item: (len(item), item)):
        if name.isdigit() and int(name) > 2:
            try:
                with open(f"/proc/{name}/stat") as handle:
                    if handle.read().rsplit(")", 1)[1].split()[1] == "2":
                        return [2, int(name)]
            except FileNotFoundError:
                continue
    return [2]


@pytest.mark.skipif(not kernel_threads(), reason="no kernel threads in this /proc")
def test_kernel_threads_are_refused(tmp_path):
    for pid in kernel_threads():
        with pytest.raises(ActivityFailed, match=f"pid {pid} is .*kernel thread"):
            kill_process(pid=pid, signal="SIGCONT")
        pidfile = pidfile_of(tmp_path, pid, name=f"k{pid}")
        with pytest.raises(ActivityFailed, match="kernel thread"):
            pause_process(pidfile)
        assert not os.path.exists(pidfile + ".cmd.json")


def test_init_and_the_caller_are_refused(tmp_path):
    with pytest.raises(ActivityFailed, match="'pid'.*pid 1 is init"):
        kill_process(pid=1)
    me = os.getpid()
    with pytest.raises(ActivityFailed, match=f"pid {me} is this process"):
        kill_process(pidfile_of(tmp_path, me))


def test_a_reused_pid_with_another_command_line_is_refused(tmp_path, owned):
    sleeper = spawn(["sleep", "30"], tmp_path / "sleep.log", owned)
    pidfile = pidfile_of(tmp_path, sleeper.pid)
    recorded = [sys.executable, "-c", "print('the service')"]
    with open(pidfile + ".cmd.json", "w") as handle:
        json.dump({"argv": recorded, "cwd": str(tmp_path)}, handle)

    expected = (
        f"pid {sleeper.pid} now runs `sleep 30`, recorded `{sys.executable} -c .*"
        "the pid was reused"
    )
    with pytest.raises(ActivityFailed, match=expected):
        kill_process(pidfile)
    with pytest.raises(ActivityFailed, match="the pid was reused"):
        pause_process(pidfile)
    with pytest.raises(ActivityFailed, match="the pid was reused"):
        restart_process(pidfile)
    assert sleeper.poll() is None and alive(sleeper.pid)
    assert json.loads(Path(pidfile + ".cmd.json").read_text())["argv"] == recorded


def test_a_normal_child_is_still_killed(tmp_path, owned):
    sleeper = spawn(["sleep", "30"], tmp_path / "sleep.log", owned)
    pidfile = pidfile_of(tmp_path, sleeper.pid)

    result = kill_process(pidfile)

    assert result["killed"] is True and result["exited"] is True
    assert sleeper.wait(5) == -signal.SIGKILL
    assert json.loads(Path(result["recorded"]).read_text())["argv"] == ["sleep", "30"]

    started = start_process(pidfile, timeout=0.1)
    owned.append(started["pid"])
    assert pause_process(pidfile)["paused"] is True
    assert resume_process(pidfile)["resumed"] is True
    again = kill_process(pidfile)
    assert again["killed"] is True and again["pid"] == started["pid"]
    assert process_running(pidfile) is False


def test_an_exec_wrapper_matches_its_record(tmp_path, owned):
    pidfile = str(tmp_path / "wrapped.pid")
    started = start_process(
        pidfile,
        command=["sh", "-c", "exec sleep 30"],
        log_file=str(tmp_path / "wrapped.log"),
    )
    owned.append(started["pid"])
    assert kill_process(pidfile)["killed"] is True


def test_a_process_title_matches_its_record(tmp_path, owned):
    """redis-server rewrites its argv to a title such as 'redis-server host:port'."""
    port = free_port()
    folder = str(tmp_path / "redis")
    server = start_redis(port, folder)
    owned.append(server.pid)
    pidfile = pidfile_of(tmp_path, server.pid, name="redis")
    with open(pidfile + ".cmd.json", "w") as handle:
        json.dump({"argv": redis_command(port, folder)}, handle)

    assert kill_process(pidfile)["killed"] is True
    assert server.wait(5) == -signal.SIGKILL


@pytest.mark.parametrize(
    ("live", "recorded", "same"),
    [
        (["sleep", "30"], ["sleep", "30"], True),
        (["sleep", "30"], ["env", "A=1", "sleep", "30"], True),
        (["sleep", "30"], ["sh", "-c", "exec sleep 30"], True),
        (["/bin/bash", "/srv/run.sh", "--x"], ["./run.sh", "--x"], True),
        (["/usr/bin/redis-server 127.0.0.1:6379"], ["redis-server", "--port"], True),
        (["nginx: master process nginx"], ["/usr/sbin/nginx"], True),
        (["sleep", "30"], ["sleep", "31"], False),
        (["bash"], ["python3", "app.py"], False),
        (["python3", "other.py"], ["python3", "app.py"], False),
        (["/usr/bin/redis-server *:6379"], ["valkey-server"], False),
        (["sleep", "30"], ["sh", "-c", "exec sleep 31"], False),
    ],
)
def test_command_line_comparison(live, recorded, same):
    assert _matches(live, recorded) is same
