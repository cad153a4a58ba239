"""The safety control's pre-flight and dry run, through real `chaos run`s on a sandbox."""

import json
import subprocess
from pathlib import Path

import pytest
from chaos_runs import EXPERIMENT, ledger_files, run_chaos, sandbox_env, verdict
from sandbox_fixtures import pid_alive

from chaospika import _proc
from chaospika.controls import _faults

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


def run_in_sandbox(state: dict, folder: Path, experiment: Path, *options: str) -> dict:
    """`chaos run [options] experiment` on the sandbox; return the journal."""
    return run_chaos(sandbox_env(state), folder, experiment, *options, timeout=120)


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

    journal = run_in_sandbox(state, tmp_path / "run", experiment, *options)

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

    journal = run_in_sandbox(state, tmp_path / "run", experiment)

    assert_refused_before_the_method(journal, "resolves to nothing")
    assert _proc.read_pid(state["pidfiles"]["worker"]) == worker
    assert pid_alive(worker)


@pytest.mark.slow
def test_a_dry_run_logs_the_plan_and_applies_nothing(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path)
    worker = _proc.read_pid(state["pidfiles"]["worker"])

    journal = run_in_sandbox(state, tmp_path / "run", EXPERIMENT, "--dry", "actions")

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
