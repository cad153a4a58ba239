"""The safety control's pre-flight and dry run, through real `chaos run`s on a sandbox."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sandbox_fixtures import pid_alive

from chaospika import _proc
from chaospika.controls import _faults
from chaospika.ledger import store

EXPERIMENT = (
    Path(__file__).resolve().parent.parent / "experiments" / "worker-crash.json"
)
CHAOS = Path(sys.executable).with_name("chaos")
CHAOSPIKA = Path(sys.executable).with_name("chaospika")
SAFETY = "chaospika.controls.safety"


def experiment_copy(
    folder: Path,
    allow_pidfiles: list | None = None,
    kill_pidfile: str | None = None,
    control_in_experiment: bool = True,
) -> Path:
    """A copy of the shipped experiment with another allow-list or kill target."""
    experiment = json.loads(EXPERIMENT.read_text())
    if not control_in_experiment:
        experiment.pop("controls")
    elif allow_pidfiles is not None:
        (safety,) = experiment["controls"]
        safety["provider"]["arguments"]["allow_pidfiles"] = allow_pidfiles
    if kill_pidfile is not None:
        for activity in experiment["method"]:
            if activity["name"] == "kill-inventory-worker":
                activity["provider"]["arguments"]["pidfile"] = kill_pidfile
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "experiment.json"
    path.write_text(json.dumps(experiment))
    return path


def run_chaos(state: dict, folder: Path, experiment: Path, *options: str) -> dict:
    """`chaos run [options] experiment` on the sandbox; return the journal."""
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        PIKA_API_URL=state["api_url"],
        PIKA_REDIS_URL=state["redis_url"],
        PIKA_DB_URL=state["db_url"],
        PIKA_WORKER_PIDFILE=state["pidfiles"]["worker"],
        PIKA_PRODUCT_ID=f"sale-{uuid.uuid4().hex[:8]}",
    )
    journal = folder / "journal.json"
    subprocess.run(
        [
            str(CHAOS),
            "--log-file",
            str(folder / "chaos.log"),
            "run",
            "--journal-path",
            str(journal),
            *options,
            str(experiment),
        ],
        env=env,
        cwd=folder,
        timeout=120,
        capture_output=True,
        check=False,
    )
    return json.loads(journal.read_text())


def ledger_files() -> list[str]:
    return [n for n in os.listdir(store.ledger_dir()) if n.endswith(".json")]


def verdict(journal_path: Path) -> int:
    done = subprocess.run(
        [str(CHAOSPIKA), "verdict", str(journal_path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode


def assert_refused_before_the_method(journal: dict, why: str) -> None:
    assert journal["status"] == "interrupted"
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    assert journal["run"] == []  # not even the load or the sale started
    refused = journal["pika_safety"]["refused"]
    assert refused and why in refused and "kill-inventory-worker" in refused
    assert journal["pika_faults"] == [] and ledger_files() == []


@pytest.mark.slow
@pytest.mark.parametrize("declared", ["in-the-experiment", "control-file"])
def test_a_target_outside_the_allow_list_is_refused_before_the_method(
    declared, make_sandbox, tmp_path
):
    state = make_sandbox(tmp_path)
    worker = _proc.read_pid(state["pidfiles"]["worker"])
    allow = [str(tmp_path / "elsewhere" / "*.pid")]
    options: list[str] = []
    if declared == "in-the-experiment":
        experiment = experiment_copy(tmp_path / "run", allow_pidfiles=allow)
    else:
        experiment = experiment_copy(tmp_path / "run", control_in_experiment=False)
        controls = tmp_path / "run" / "controls.json"
        provider = {"type": "python", "module": SAFETY}
        provider["arguments"] = {"allow_pidfiles": allow}
        controls.write_text(json.dumps({"safety": {"provider": provider}}))
        options = ["--control-file", str(controls)]

    journal = run_chaos(state, tmp_path / "run", experiment, *options)

    assert_refused_before_the_method(journal, "is not in allow_pidfiles")
    assert _proc.read_pid(state["pidfiles"]["worker"]) == worker
    assert pid_alive(worker)
    assert verdict(tmp_path / "run" / "journal.json") == 6


@pytest.mark.slow
@pytest.mark.parametrize("target", ["no-pidfile", "dead-pid"])
def test_a_fault_whose_target_resolves_to_nothing_is_refused(
    target, make_sandbox, tmp_path
):
    state = make_sandbox(tmp_path)
    worker = _proc.read_pid(state["pidfiles"]["worker"])
    ghost = tmp_path / "ghost.pid"
    if target == "dead-pid":
        finished = subprocess.Popen(["true"])  # its pid is free once it is reaped
        finished.wait()
        ghost.write_text(f"{finished.pid}\n")
    experiment = experiment_copy(
        tmp_path / "run",
        allow_pidfiles=["${worker_pidfile}", str(ghost)],
        kill_pidfile=str(ghost),
    )

    journal = run_chaos(state, tmp_path / "run", experiment)

    assert_refused_before_the_method(journal, "resolves to nothing")
    assert _proc.read_pid(state["pidfiles"]["worker"]) == worker
    assert pid_alive(worker)


@pytest.mark.slow
def test_a_dry_run_logs_the_plan_and_applies_nothing(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path)
    worker = _proc.read_pid(state["pidfiles"]["worker"])

    journal = run_chaos(state, tmp_path / "run", EXPERIMENT, "--dry", "actions")

    assert _proc.read_pid(state["pidfiles"]["worker"]) == worker
    assert pid_alive(worker)
    assert ledger_files() == [] and journal["pika_faults"] == []
    safety = journal["pika_safety"]
    assert safety["dry"] == "actions" and safety["refused"] is None
    (entry,) = safety["plan"]
    assert entry["activity"] == "kill-inventory-worker"
    assert entry["fault"] == "process.kill" and entry["applied"] is False
    assert entry["targets"][0]["pid"] == worker
    assert "start the process again" in entry["undo"]
    log = (tmp_path / "run" / "chaos.log").read_text()
    assert "safety plan: kill-inventory-worker: process.kill of pid" in log
    assert "not applied (dry run)" in log


def test_the_pidfile_allow_list_matches_literal_paths_and_globs(tmp_path):
    odd = tmp_path / "run[INT-1]" / "worker.pid"  # [ ] would be a glob class
    assert _faults.pidfile_allowed(str(odd), (str(odd),))
    assert _faults.pidfile_allowed(str(tmp_path / "a.pid"), (str(tmp_path / "*.pid"),))
    assert not _faults.pidfile_allowed("/etc/passwd", (str(tmp_path / "*.pid"),))
    assert not _faults.pidfile_allowed(str(tmp_path / "a.pid"), ())


def test_hosts_are_loopback_only_by_default():
    allowed = _faults.DEFAULT_ALLOW_HOSTS
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert _faults.host_allowed(host, allowed), host
    for host in ("10.0.0.1", "example.com", "::2", "", None):
        assert not _faults.host_allowed(host, allowed), host
    assert _faults.host_allowed("db.internal", ("*.internal",))


def test_a_registered_url_fault_is_checked_against_the_hosts():
    fault = _faults.FaultKind("http.block", _faults.url_targets("url"), max_targets=1)
    policy = _faults.Policy()
    _, refused = _faults.check_fault(
        "block", fault, {"url": "http://10.1.2.3:80/x"}, policy, live=True
    )
    assert refused and "not in allow_hosts" in refused[0]
    _, refused = _faults.check_fault(
        "block", fault, {"url": "http://127.0.0.1:8731/"}, policy, live=True
    )
    assert refused == []
    many = {"url": ["http://127.0.0.1/a", "http://localhost/b"]}
    _, refused = _faults.check_fault("block", fault, many, policy, live=True)
    assert refused and "more than max_targets=1" in refused[0]
