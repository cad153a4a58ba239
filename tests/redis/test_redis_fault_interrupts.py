"""Interrupted while a Redis flush or stop is in force, nothing outlives the run.

SIGINT/SIGTERM of `chaos run` (the experiment applies the fault, then waits 30 s):
the safety control undoes the fault before the journal is written. SIGKILL of
the process that applied the fault (a plain Python process: chaos adds nothing
to what the ledger keeps): `chaospika cleanup` undoes it, or, with a ttl, the
ledger watchdog, with no owner left. (A pause and a slow Redis end by
themselves; a client kill is over at once.)
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from chaos_runs import CHAOSPIKA, chaos_argv, ledger_files
from redis_fault_helpers import assert_same_key, content_of, snapshot_of
from sandbox_fixtures import pid_alive, wait_until

from chaospika import _proc
from chaospika.ledger import store
from chaospika.redis.probes import ping

pytestmark = pytest.mark.slow

FAULTS = {
    "flush": {"func": "flush_keys", "arguments": {"pattern": "*"}},
    "stop": {"func": "stop_server", "arguments": {"pidfile": "${pidfile}"}},
}


def experiment(folder: Path, fault: str, **extra: object) -> Path:
    chosen = FAULTS[fault]
    arguments = {"redis_url": "${redis_url}", **chosen["arguments"], **extra}
    document = {
        "version": "1.0.0",
        "title": f"A Redis {fault} held until chaos is interrupted",
        "description": "The fault lasts until the test signals chaos.",
        "configuration": {
            "redis_url": {"type": "env", "key": "PIKA_REDIS_URL"},
            "pidfile": {"type": "env", "key": "PIKA_REDIS_PIDFILE", "default": ""},
        },
        "controls": [
            {
                "name": "safety",
                "provider": {"type": "python", "module": "chaospika.controls.safety"},
            }
        ],
        "steady-state-hypothesis": {
            "title": "Redis answers",
            "probes": [
                {
                    "type": "probe",
                    "name": "redis-answers",
                    "tolerance": {"type": "jsonpath", "path": "$.ok", "expect": True},
                    "provider": {
                        "type": "python",
                        "module": "chaospika.redis.probes",
                        "func": "ping",
                        "arguments": {"redis_url": "${redis_url}"},
                    },
                }
            ],
        },
        "method": [
            {
                "type": "action",
                "name": f"redis-{fault}",
                "pauses": {"after": 30},
                "provider": {
                    "type": "python",
                    "module": "chaospika.redis.actions",
                    "func": chosen["func"],
                    "arguments": arguments,
                },
            }
        ],
    }
    path = folder / f"{fault}.json"
    path.write_text(json.dumps(document))
    return path


def start_chaos(folder: Path, path: Path, **env: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "chaos.out", "ab") as output:
        return subprocess.Popen(
            chaos_argv(folder, path),
            env={**os.environ, **env},
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def record() -> dict:
    (name,) = ledger_files()
    return json.loads((Path(store.ledger_dir()) / name).read_text())


def wait_applied(chaos: subprocess.Popen, folder: Path) -> None:
    """Poll until the fault is applied and chaos waits (its pause after the action).

    Not before: chaoslib sleeps the pause after an activity even when a signal
    interrupted the activity itself.
    """

    def applied() -> bool:
        if chaos.poll() is not None:
            return True
        if len(ledger_files()) != 1 or record()["state"] != "applied":
            return False
        return "Pausing after activity" in (folder / "chaos.out").read_text()

    wait_until(applied, 60, 0.02)
    assert chaos.poll() is None, (folder / "chaos.out").read_text()[-3000:]


def stop_chaos(chaos: subprocess.Popen, signum: int) -> float:
    sent = time.monotonic()
    chaos.send_signal(signum)
    try:
        chaos.wait(10)
    finally:
        if chaos.poll() is None:
            chaos.kill()
            chaos.wait()
    return time.monotonic() - sent


def cleanup() -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHAOSPIKA), "cleanup"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def filled(redis_url: str) -> tuple[redis.Redis, dict, dict]:
    client = redis.Redis.from_url(redis_url)
    client.set("stock:p", 120, px=600_000)
    client.xadd("orders", {"order": 1})
    client.xgroup_create("orders", "inventory", id="0")
    client.xreadgroup("inventory", "w-1", {"orders": ">"})
    client.hset("product:p", mapping={"name": "tea", "price": 3})
    before = snapshot_of(client)
    return client, before, {key: content_of(client, key) for key in before}


def assert_all_back(client: redis.Redis, before: dict, contents: dict) -> None:
    assert client.dbsize() == len(before)
    for key, (dump, _) in before.items():
        assert_same_key(client, key, dump, contents[key])
    assert 0 < client.pttl("stock:p") <= 600_000


def test_sigint_mid_flush_restores_the_keys_before_the_journal(redis_url, tmp_path):
    client, before, contents = filled(redis_url)
    folder = tmp_path / "run"
    chaos = start_chaos(folder, experiment(tmp_path, "flush"), PIKA_REDIS_URL=redis_url)
    wait_applied(chaos, folder)
    assert client.dbsize() == 0

    took = stop_chaos(chaos, signal.SIGINT)

    assert took < 5, (folder / "chaos.out").read_text()[-3000:]
    assert_all_back(client, before, contents)
    journal = json.loads((folder / "journal.json").read_text())
    assert journal["status"] == "interrupted"
    safety = journal["pika_safety"]
    assert safety["errors"] == [] and safety["outstanding"] == []
    (flush,) = journal["pika_faults"]
    assert flush["kind"] == "redis.flush" and flush["undone_by"] == "safety"


def killed_after(code: str) -> None:
    """Run `code` in a Python process that SIGKILLs itself right after it."""
    script = f"import os, signal\n{code}\nos.kill(os.getpid(), signal.SIGKILL)\n"
    owner = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr.decode()[-2000:]


def test_sigkill_mid_flush_then_cleanup_restores_the_keys(redis_url):
    client, before, contents = filled(redis_url)
    killed_after(
        f"from chaospika.redis.actions import flush_keys\nflush_keys({redis_url!r})"
    )
    assert client.dbsize() == 0

    done = cleanup()

    assert done.returncode == 0, done.stdout + done.stderr
    assert "undone redis-flush" in done.stdout
    assert_all_back(client, before, contents)
    again = cleanup()
    assert again.returncode == 0 and "nothing to undo" in again.stdout


def test_sigkill_mid_flush_with_a_ttl_the_watchdog_restores(redis_url):
    client, before, contents = filled(redis_url)
    killed_after(
        "from chaospika.redis.actions import flush_keys\n"
        f"flush_keys({redis_url!r}, ttl=1)"
    )
    killed_at = time.monotonic()
    assert client.dbsize() == 0

    wait_until(lambda: client.dbsize() == len(before), 10, 0.05)
    assert time.monotonic() - killed_at < 1 + 4
    assert_all_back(client, before, contents)
    wait_until(lambda: record()["state"] == "undone", 5, 0.05)
    assert record()["undone_by"] == "ttl"


def test_sigterm_mid_stop_starts_the_server_again(pidfile_redis, tmp_path):
    url, pidfile = pidfile_redis["url"], pidfile_redis["pidfile"]
    first = _proc.read_pid(pidfile)
    folder = tmp_path / "run"
    path = experiment(tmp_path, "stop")
    chaos = start_chaos(folder, path, PIKA_REDIS_URL=url, PIKA_REDIS_PIDFILE=pidfile)
    wait_applied(chaos, folder)
    assert not pid_alive(first) and ping(url)["ok"] is False

    took = stop_chaos(chaos, signal.SIGTERM)

    assert took < 5, (folder / "chaos.out").read_text()[-3000:]
    assert ping(url)["ok"] is True
    assert _proc.read_pid(pidfile) != first
    journal = json.loads((folder / "journal.json").read_text())
    assert journal["pika_safety"]["signal"] == "SIGTERM"
    assert journal["pika_safety"]["outstanding"] == []
    assert journal["pika_faults"][0]["undone_by"] == "safety"


def test_sigkill_mid_stop_with_a_ttl_the_watchdog_starts_it(pidfile_redis):
    url, pidfile = pidfile_redis["url"], pidfile_redis["pidfile"]
    killed_after(
        "from chaospika.redis.actions import stop_server\n"
        f"stop_server({url!r}, pidfile={pidfile!r}, ttl=1)"
    )
    killed_at = time.monotonic()
    assert ping(url)["ok"] is False

    wait_until(lambda: ping(url, timeout=0.2)["ok"], 10, 0.05)
    assert time.monotonic() - killed_at < 1 + 4
    wait_until(lambda: record()["state"] == "undone", 5, 0.05)
    assert record()["undone_by"] == "ttl"
