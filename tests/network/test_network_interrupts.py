"""SIGINT, SIGTERM and SIGKILL of `chaos run` while a network fault is in force.

The experiment adds a toxic (or disables a proxy) that lasts 30 s; chaos is
signalled while it waits. SIGINT/SIGTERM: the safety control undoes the fault
before the journal is written. SIGKILL: a fault with a ttl is undone by the
ledger watchdog (and by our proxy itself), one without by `chaospika cleanup`.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from chaos_runs import CHAOSPIKA, chaos_argv, ledger_files, verdict
from proxy_helpers import redis_port
from sandbox_fixtures import wait_until

from chaospika.ledger import store
from chaospika.network import client

FAULTS = {
    "toxic": {
        "name": "slow-down-redis",
        "func": "inject_latency",
        "arguments": {"latency": "300ms", "duration": "30s"},
    },
    "partition": {
        "name": "cut-redis-off",
        "func": "disable_proxy",
        "arguments": {"duration": "30s"},
    },
}


ARGUMENTS = {"proxy_url": "${proxy_url}", "proxy": "${proxy_name}"}


def _activity(chosen: dict, **extra: object) -> dict:
    return {
        "type": "action",
        "name": chosen["name"],
        "provider": {
            "type": "python",
            "module": "chaospika.network.actions",
            "func": chosen["func"],
            "arguments": {**ARGUMENTS, **chosen["arguments"], **extra},
        },
    }


def _experiment(folder: Path, fault: str, **extra: object) -> Path:
    chosen, arguments = FAULTS[fault], ARGUMENTS
    experiment = {
        "version": "1.0.0",
        "title": f"A {fault} held until chaos is interrupted",
        "description": "The fault lasts 30 s; the test signals chaos meanwhile.",
        "configuration": {
            "proxy_url": {"type": "env", "key": "PIKA_PROXY_URL"},
            "proxy_name": {"type": "env", "key": "PIKA_PROXY_NAME"},
        },
        "controls": [
            {
                "name": "safety",
                "provider": {"type": "python", "module": "chaospika.controls.safety"},
            }
        ],
        "steady-state-hypothesis": {
            "title": "The proxy is up and clean",
            "probes": [
                {
                    "type": "probe",
                    "name": "proxy-is-clean",
                    "tolerance": {
                        "type": "jsonpath",
                        "path": "$.toxics_count",
                        "expect": 0,
                    },
                    "provider": {
                        "type": "python",
                        "module": "chaospika.network.probes",
                        "func": "toxics_in_force",
                        "arguments": arguments,
                    },
                }
            ],
        },
        "method": [_activity(chosen, **extra)],
    }
    path = folder / f"{fault}.json"
    path.write_text(json.dumps(experiment))
    return path


@pytest.fixture
def redis_proxy(proxy_api, redis_url, make_proxy):
    make_proxy("redis", f"127.0.0.1:{redis_port(redis_url)}")
    return proxy_api


def _in_force(api: str, fault: str) -> bool:
    shown = client.get_proxy(api, "redis")
    if fault == "toxic":
        return bool(shown["toxics"])
    return shown["enabled"] is False


def _start_chaos(api: str, folder: Path, experiment: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PIKA_PROXY_URL": api,
        "PIKA_PROXY_NAME": "redis",
    }
    with open(folder / "chaos.out", "ab") as output:
        return subprocess.Popen(
            chaos_argv(folder, experiment),
            env=env,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _start_fault(
    api: str, tmp_path: Path, fault: str, **extra: object
) -> subprocess.Popen:
    """Start chaos on the experiment; return once its fault is in force."""
    chaos = _start_chaos(api, tmp_path / "run", _experiment(tmp_path, fault, **extra))
    try:
        wait_until(lambda: _in_force(api, fault) or chaos.poll() is not None, 60)
    except BaseException:
        chaos.kill()
        chaos.wait()
        raise
    assert chaos.poll() is None, (tmp_path / "run" / "chaos.out").read_text()[-3000:]
    time.sleep(0.2)  # inside the activity's 30 s wait
    return chaos


def _cleanup() -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHAOSPIKA), "cleanup"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "signum, fault",
    [(signal.SIGINT, "toxic"), (signal.SIGTERM, "partition")],
    ids=["INT-toxic", "TERM-partition"],
)
def test_a_signal_mid_fault_undoes_it_before_the_journal(
    signum, fault, redis_proxy, tmp_path
):
    api = redis_proxy
    chaos = _start_fault(api, tmp_path, fault)
    try:
        sent = time.monotonic()
        chaos.send_signal(signum)
        chaos.wait(10)
        took = time.monotonic() - sent
    finally:
        if chaos.poll() is None:
            chaos.kill()
            chaos.wait()
    output = (tmp_path / "run" / "chaos.out").read_text()
    assert took < 5, output[-3000:]
    assert not _in_force(api, fault)
    journal = json.loads((tmp_path / "run" / "journal.json").read_text())
    assert journal["status"] == "interrupted"
    safety = journal["pika_safety"]
    assert safety["signal"] == signal.Signals(signum).name
    assert safety["errors"] == [] and safety["outstanding"] == []
    (record,) = journal["pika_faults"]
    assert record["kind"] == f"network.{fault}" and record["target"]["proxy"] == "redis"
    assert record["state"] == "undone" and record["undone_by"] == "safety"
    assert verdict(tmp_path / "run" / "journal.json") == 6


def test_sigkill_mid_fault_the_watchdog_ends_the_ttl_one_cleanup_the_other(
    redis_proxy, tmp_path
):
    """A partition without ttl, then a toxic with a 2 s ttl; chaos is SIGKILLed."""
    api = redis_proxy
    partition = {**FAULTS["partition"], "arguments": {}}  # no duration, no ttl
    experiment = _experiment(tmp_path, "toxic", ttl=2)
    data = json.loads(experiment.read_text())
    data["method"].insert(0, _activity(partition))
    experiment.write_text(json.dumps(data))
    chaos = _start_chaos(api, tmp_path / "run", experiment)
    try:
        wait_until(lambda: _in_force(api, "toxic") or chaos.poll() is not None, 60)
    finally:
        chaos.kill()
        chaos.wait()  # reaped: its pid is gone for the watchdog
    killed_at = time.monotonic()
    assert _in_force(api, "partition") and _in_force(api, "toxic")
    records = {_record(name)["kind"]: name for name in ledger_files()}
    assert sorted(records) == ["network.partition", "network.toxic"]
    toxic = records["network.toxic"]
    assert _record(toxic)["watchdog_pid"] > 0

    # the toxic had a ttl: the watchdog removes it, nobody alive
    wait_until(lambda: _record(toxic)["state"] == "undone", 10, 0.05)
    assert _record(toxic)["undone_by"] == "ttl"
    assert not _in_force(api, "toxic")
    assert time.monotonic() - killed_at < 2 + 3
    # the partition had none: it holds until `chaospika cleanup`
    assert _in_force(api, "partition")
    done = _cleanup()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "undone network-partition" in done.stdout
    assert not _in_force(api, "partition")
    again = _cleanup()
    assert again.returncode == 0 and "nothing to undo" in again.stdout


def _record(name: str) -> dict:
    return json.loads((Path(store.ledger_dir()) / name).read_text())
