"""Pause, kill clients, stop/start and slow Redis, against servers the tests start."""

import os
import subprocess
import time

import pytest
import redis
from chaoslib.exceptions import ActivityFailed
from sandbox_fixtures import pid_alive, wait_until

from chaospika import _proc, ledger
from chaospika._ports import free_port
from chaospika.redis import _pause
from chaospika.redis.actions import (
    kill_clients,
    pause_clients,
    slow_redis,
    start_server,
    stop_server,
    stop_slow_redis,
    unpause_clients,
)
from chaospika.redis.probes import client_counts, pause_in_force, ping
from chaospika.sandbox.redis_server import redis_command


def quick(url: str, timeout: float = 0.3) -> redis.Redis:
    """A client that waits `timeout` per command and never retries."""
    return redis.Redis.from_url(url, socket_timeout=timeout, retry=None)


def test_a_pause_write_holds_writes_not_reads_and_ends_early(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.set("k", "before")
    result = pause_clients(redis_url, duration="20s", mode="write")

    assert result["can_end_early"] is True and result["duration_seconds"] == 20
    assert pause_in_force(redis_url, timeout=0.2)["mode"] == "write"
    assert quick(redis_url).get("k") == b"before"
    with pytest.raises(redis.exceptions.TimeoutError):
        quick(redis_url).set("k", "during")
    began = time.monotonic()
    assert unpause_clients(redis_url)["unpaused"] is True
    quick(redis_url).set("k", "after")
    assert time.monotonic() - began < 2  # ended 18 s early
    assert pause_in_force(redis_url, timeout=0.2)["paused"] is False
    assert ledger.get(result["fault"]).data["undone_by"] == "unpause_clients"
    assert ledger.outstanding() == []


def test_the_ledger_undo_of_a_pause_write_is_unpause_and_safe_twice(redis_url):
    result = pause_clients(redis_url, duration=30, mode="write")
    with pytest.raises(redis.exceptions.TimeoutError):
        quick(redis_url).set("k", "during")

    (report,) = ledger.undo_outstanding(by="cleanup")

    assert report["result"]["unpaused"] is True
    quick(redis_url).set("k", "after")
    args = ledger.get(result["fault"]).data["undo"]["args"]
    assert args["mode"] == "write" and args["until"] == result["until"]
    pause_clients(redis_url, duration=30, mode="write")  # someone else's, later
    assert _pause.undo_pause(**{**args, "until": time.time() - 1})["unpaused"] is False
    assert pause_in_force(redis_url, timeout=0.2)["mode"] == "write"  # left alone
    unpause_clients(redis_url)


def test_a_pause_all_cannot_be_ended_early_and_its_undo_is_its_expiry(redis_url):
    result = pause_clients(redis_url, duration=1.5)

    assert result["mode"] == "all" and result["can_end_early"] is False
    state = pause_in_force(redis_url, timeout=0.2)
    assert state["paused"] is True and state["mode"] == "all"
    refused = unpause_clients(redis_url)
    assert refused["unpaused"] is False and "cannot be ended early" in refused["reason"]
    began = time.monotonic()
    done = ledger.undo(result["fault"])  # waits for the expiry
    assert result["until"] - 0.05 <= time.time()
    assert done["result"]["by"] == "expiry"
    assert quick(redis_url).ping() is True
    assert time.monotonic() - began < 1.5 + 2
    assert ledger.undo(result["fault"])["already"] is True


def test_pause_arguments_are_checked(redis_url):
    with pytest.raises(ActivityFailed, match="'ttl'.*cannot be ended early"):
        pause_clients(redis_url, duration=1, mode="all", ttl=0.5)
    with pytest.raises(ActivityFailed, match="'duration' must be <= 600"):
        pause_clients(redis_url, duration="11m")
    with pytest.raises(ActivityFailed, match="'mode' must be one of all, write"):
        pause_clients(redis_url, duration=1, mode="reads")
    assert ledger.outstanding() == []


def test_kill_clients_by_type_keeps_itself_and_other_types(redis_url):
    normals = [redis.Redis.from_url(redis_url) for _ in range(3)]
    for client in normals:
        client.ping()
    listener = redis.Redis.from_url(redis_url).pubsub()
    listener.subscribe("news")
    listener.get_message(timeout=1)

    result = kill_clients(redis_url)

    assert result["killed_count"] == 3 and result["undoable"] is False
    assert client_counts(redis_url)["connected_count"] == 2  # the listener + probe
    record = ledger.get(result["fault"]).data
    assert record["state"] == "undone" and record["undo"] is None
    assert record["undone_by"].startswith("over at once")
    assert normals[0].ping() is True  # a client reconnects by itself
    listener.close()


def test_kill_clients_of_one_address(redis_url):
    victim, bystander = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    victim.client_setname("victim")
    bystander.client_setname("bystander")
    addr = next(c["addr"] for c in victim.client_list() if c["name"] == "victim")

    assert kill_clients(redis_url, addr=addr)["killed_count"] == 1

    names = {c["name"] for c in bystander.client_list()}
    assert "bystander" in names and "victim" not in names
    with pytest.raises(ActivityFailed, match="'addr' must be"):
        kill_clients(redis_url, addr="127.0.0.1:port")


def test_stop_by_pidfile_then_start_from_the_ledger(pidfile_redis):
    url, pidfile = pidfile_redis["url"], pidfile_redis["pidfile"]
    first = _proc.read_pid(pidfile)

    stopped = stop_server(url, pidfile=pidfile)

    assert stopped["stopped"] is True and stopped["pid"] == first
    assert not pid_alive(first) and ping(url, timeout=0.5)["ok"] is False
    started = start_server(url)
    assert started["started"] is True and ping(url)["ok"] is True
    assert _proc.read_pid(pidfile) == started["pid"] != first
    assert ledger.get(stopped["fault"]).data["undone_by"] == "start_server"
    assert start_server(url, pidfile=pidfile)["already_running"] is True


def test_stop_by_sigkill_undone_by_the_ledger(pidfile_redis):
    url, pidfile = pidfile_redis["url"], pidfile_redis["pidfile"]
    stopped = stop_server(url, pidfile=pidfile, how="sigkill")
    assert stopped["stopped"] is True

    (report,) = ledger.undo_outstanding(by="cleanup")

    assert report["result"]["started"] is True and ping(url)["ok"] is True
    assert ledger.outstanding() == []


def test_stop_refuses_a_pidfile_that_is_not_that_server(pidfile_redis, tmp_path):
    other = tmp_path / "other.pid"
    sleeper = subprocess.Popen(["sleep", "30"])
    _proc.write_pidfile(str(other), sleeper.pid)
    try:
        with pytest.raises(ActivityFailed, match="runs as pid"):
            stop_server(pidfile_redis["url"], pidfile=str(other))
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.raises(ActivityFailed, match="give 'pidfile'.*or 'start_command'"):
        stop_server(pidfile_redis["url"])
    assert ping(pidfile_redis["url"])["ok"] is True
    assert ledger.outstanding() == []


def test_stop_and_start_by_commands(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    argv = redis_command(port, str(tmp_path))
    pid = _proc.spawn(argv, str(tmp_path), dict(os.environ), str(tmp_path / "r.log"))
    try:
        wait_until(lambda: ping(url)["ok"], 10, 0.02)
        stopped = stop_server(url, start_command=argv)
        assert stopped["how"] == "shutdown" and stopped["stopped"] is True
        wait_until(lambda: not pid_alive(pid), 5, 0.02)

        (report,) = ledger.undo_outstanding(by="cleanup")

        assert report["result"]["started"] is True and ping(url)["ok"] is True
        again = report["result"]["pid"]
        by_command = ["redis-cli", "-p", str(port), "shutdown", "nosave"]
        stopped = stop_server(url, start_command=argv, stop_command=by_command)
        assert stopped["how"] == "command" and stopped["stopped"] is True
        wait_until(lambda: not pid_alive(again), 5, 0.02)
        assert start_server(url, start_command=argv)["started"] is True
    finally:
        client = quick(url, 2)
        try:
            client.shutdown(nosave=True)
        except redis.exceptions.ConnectionError:
            pass


def test_slow_redis_needs_the_debug_command(redis_url):
    with pytest.raises(ActivityFailed, match="--enable-debug-command local"):
        slow_redis(redis_url, duration=1)
    assert ledger.outstanding() == []


def test_slow_redis_stalls_every_client_and_stops_by_itself(debug_redis_url):
    result = slow_redis(debug_redis_url, duration=1.5, sleep_ms=300, interval=0.05)
    stalls = []
    client = redis.Redis.from_url(debug_redis_url)
    for _ in range(200):  # PING for 1 s: some wait behind a DEBUG SLEEP
        began = time.monotonic()
        client.ping()
        stalls.append(time.monotonic() - began)
        if sum(stalls) > 1.0:
            break
    assert max(stalls) > 0.15, stalls
    wait_until(lambda: not pid_alive(result["pid"]), 5, 0.05)  # on its own
    assert time.time() >= result["until"] - 0.1
    assert ping(debug_redis_url, timeout=0.1)["ok"] is True
    assert stop_slow_redis(debug_redis_url)["stopped_count"] == 0  # already over


def test_slow_redis_stopped_early(debug_redis_url):
    result = slow_redis(debug_redis_url, duration=30, sleep_ms=200, interval=0)
    assert ping(debug_redis_url, timeout=0.05)["ok"] is False

    assert stop_slow_redis(debug_redis_url)["stopped_count"] == 1

    assert not pid_alive(result["pid"])
    assert ping(debug_redis_url, timeout=0.5)["ok"] is True
    assert ledger.outstanding() == []
