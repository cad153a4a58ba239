"""The example CI workflows parse, and every command they name exists with its options."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chaospika.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
# chaostoolkit/run-action@v0's inputs (its action.yaml)
RUN_ACTION_INPUTS = {
    "experiment-file",
    "working-dir",
    "verbose",
    "install-dependencies",
    "dependencies-file",
    "python-version",
    "upload-results-as-artifacts",
    "result-artifact-name",
    "github-token",
}


def workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict) and data.get("jobs"), name
    return data


def triggers(data: dict) -> dict:
    return data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true


def steps(data: dict) -> list[dict]:
    return [step for job in data["jobs"].values() for step in job["steps"]]


def commands(data: dict, program: str) -> list[list[str]]:
    """Every `program ...` command line of the run steps, as argv (expressions as X)."""
    found = []
    for step in steps(data):
        script = re.sub(r"\$\{\{.*?\}\}", "X", step.get("run", ""))
        for line in script.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == program:
                found.append(words[1:])
    return found


@pytest.fixture(params=["chaos.yml", "chaos-run-action.yml"])
def any_workflow(request) -> dict:
    return workflow(request.param)


def test_each_runs_weekly_and_by_hand(any_workflow):
    on = triggers(any_workflow)
    (schedule,) = on["schedule"]
    _minute, _hour, day, month, weekday = schedule["cron"].split()
    assert (day, month) == ("*", "*") and weekday != "*"  # once a week
    assert "workflow_dispatch" in on


def sandbox_experiments(data: dict) -> list[str]:
    """The experiments chaos.yml runs by default (none in the other workflow)."""
    job = next(iter(data["jobs"].values()))
    return job.get("env", {}).get("SANDBOX_EXPERIMENTS", "").split()


def test_every_chaospika_command_named_exists_with_its_options(any_workflow):
    named = commands(any_workflow, "chaospika")
    assert named
    parser = build_parser()
    for argv in named:
        expanded = []
        for word in argv:
            if word == "${EXPERIMENTS:-$SANDBOX_EXPERIMENTS}":
                expanded += sandbox_experiments(any_workflow)
            else:
                expanded.append(word)
        try:
            args = parser.parse_args(expanded)
        except SystemExit:  # argparse: unknown command or option
            pytest.fail(f"`chaospika {shlex.join(argv)}` is not a valid command")
        assert callable(args.handler)


def test_chaos_yml_runs_the_sandbox_experiments_publishes_and_uploads():
    data = workflow("chaos.yml")
    run = ["run", "${EXPERIMENTS:-$SANDBOX_EXPERIMENTS}", "--results", "results"]
    assert [*run, "--timeout", "1800"] in commands(data, "chaospika")
    assert ["sandbox", "up", "--proxy"] in commands(data, "chaospika")
    experiments = sandbox_experiments(data)
    assert "experiments/worker-crash.json" in experiments
    for path in experiments:
        assert (ROOT / path).is_file(), f"{path}: no such experiment"
        keys = [
            str(value.get("key", ""))
            for value in json.loads((ROOT / path).read_text())
            .get("configuration", {})
            .values()
            if isinstance(value, dict)
        ]
        assert not [k for k in keys if "DOCKER" in k or "K8S" in k], path
    uses = {step.get("uses", "").split("@")[0]: step for step in steps(data)}
    assert uses["mikepenz/action-junit-report"]["with"]["report_paths"] == (
        "results/**/junit.xml"
    )
    assert uses["actions/upload-artifact"]["with"]["path"] == "results/"
    for name in ("mikepenz/action-junit-report", "actions/upload-artifact"):
        assert uses[name]["if"] == "always()"
    installs = [s["run"] for s in steps(data) if "pip install" in s.get("run", "")]
    assert installs and "chaostoolkit" in installs[0]


def test_the_run_action_example_is_judged_by_the_verdict():
    data = workflow("chaos-run-action.yml")
    all_steps = steps(data)
    index = next(
        i
        for i, s in enumerate(all_steps)
        if s.get("uses") == "chaostoolkit/run-action@v0"
    )
    action = all_steps[index]
    assert set(action["with"]) <= RUN_ACTION_INPUTS
    assert action["continue-on-error"] is True
    experiment = Path(action["with"]["working-dir"].replace("src", str(ROOT), 1))
    assert (experiment / action["with"]["experiment-file"]).is_file()
    later = all_steps[index + 1 :]
    verdicts = [s for s in later if s.get("run", "").startswith("chaospika verdict")]
    (verdict,) = verdicts
    assert verdict["if"] == "always()"
    assert shlex.split(verdict["run"]) == [
        "chaospika",
        "verdict",
        "/tmp/ctk/journal.json",  # where run-action has chaos write it
        "--junit",
        "junit.xml",
    ]


def test_the_chaos_commands_named_exist():
    named = [
        argv
        for name in ("chaos.yml", "chaos-run-action.yml")
        for argv in commands(workflow(name), "chaos")
    ]
    subcommands = {argv[0] for argv in named if argv} | {"run"}  # run-action: chaos run
    for sub in sorted(subcommands):
        done = subprocess.run(
            [sys.executable, "-m", "chaostoolkit", sub, "--help"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (sub, done.stderr)
