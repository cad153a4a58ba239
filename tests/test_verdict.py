"""`chaospika verdict`: one exit code per way a journal can end, and JUnit XML."""

import copy
import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from chaospika.verdict import CODES, judge, junit_xml

CHAOSPIKA = Path(sys.executable).with_name("chaospika")


def probe(name: str, met: bool = True, output=True, status="succeeded") -> dict:
    return {
        "activity": {"type": "probe", "name": name},
        "status": status,
        "output": output,
        "tolerance_met": met,
        "duration": 0.1,
    }


def activity(name: str, status: str = "succeeded", output=None) -> dict:
    run = {"activity": {"type": "action", "name": name}, "status": status}
    run["output"] = output
    if status == "failed":
        run["exception"] = ["Traceback ...", "ActivityFailed: worker not found\n"]
    return run


LOAD = {
    "thresholds_passed": True,
    "thresholds": {"http_req_failed": {"rate==0": True}},
    "metrics": {},
}

PASSED = {
    "experiment": {"title": "Orders survive"},
    "status": "completed",
    "deviated": False,
    "steady_states": {
        "before": {"steady_state_met": True, "probes": [probe("consistent")]},
        "after": {"steady_state_met": True, "probes": [probe("consistent")]},
    },
    "run": [activity("load", output=LOAD), activity("kill")],
    "rollbacks": [activity("restart")],
}


def variant(change) -> dict:
    journal = copy.deepcopy(PASSED)
    change(journal)
    return journal


def deviated(j):
    inconsistent = {"consistent": False, "violations": ["1 lost"], "lost": ["o7"]}
    j["deviated"] = True
    j["steady_states"]["after"] = {
        "steady_state_met": False,
        "probes": [probe("consistent", met=False, output=inconsistent)],
    }


def baseline_not_met(j):
    j["status"] = "failed"
    j["steady_states"]["before"] = {
        "steady_state_met": False,
        "probes": [probe("api-is-healthy", met=False, output={"ratio": 0.0})],
    }
    j["steady_states"]["after"] = None
    j["run"], j["rollbacks"] = [], []


def activity_raised(j):
    j["run"][1] = activity("kill", status="failed")


def interrupted(j):
    j["status"] = "interrupted"
    j["steady_states"]["after"] = None
    j["run"][1] = activity("kill", status="failed")


def threshold_failed(j):
    j["run"][0]["output"] = {
        "thresholds_passed": False,
        "thresholds": {"http_req_failed": {"rate==0": False}},
    }


def rollback_failed(j):
    j["rollbacks"][0] = activity("restart", status="failed")


CASES = [
    ("passed", lambda j: None),
    ("deviated", deviated),
    ("baseline-not-met", baseline_not_met),
    ("activity-failed", activity_raised),
    ("interrupted", interrupted),
    ("threshold-failed", threshold_failed),
    ("rollback-failed", rollback_failed),
]


@pytest.mark.parametrize(("outcome", "change"), CASES, ids=[c[0] for c in CASES])
def test_each_ending_has_its_own_exit_code(outcome, change, tmp_path):
    journal = variant(change)
    result = judge(journal)
    assert result.outcome == outcome, result.reasons
    assert result.code == CODES[outcome]
    path = tmp_path / "journal.json"
    path.write_text(json.dumps(journal))
    junit = tmp_path / "junit.xml"
    done = subprocess.run(
        [str(CHAOSPIKA), "verdict", str(path), "--junit", str(junit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == CODES[outcome], done.stdout + done.stderr
    assert f"verdict: {outcome}" in done.stdout
    suite = ElementTree.parse(junit).getroot()
    assert suite.tag == "testsuite"
    failed = [case for case in suite if case.find("failure") is not None]
    assert (len(failed) == 0) == (outcome == "passed")


def test_exit_codes_are_distinct():
    assert len(set(CODES.values())) == len(CODES)
    assert CODES["passed"] == 0


def test_a_deviation_names_the_ids_and_every_reason_is_kept():
    journal = variant(deviated)
    journal["rollbacks"][0] = activity("restart", status="failed")
    result = judge(journal)
    assert result.outcome == "deviated"
    assert len(result.reasons) == 2 and "rollbacks failed" in result.reasons[1]
    after = next(c for c in result.checks if c.kind == "after")
    assert "lost: o7" in after.message


def test_junit_has_a_case_per_probe_activity_threshold_and_rollback():
    suite = ElementTree.fromstring(junit_xml(judge(PASSED)).split("?>", 1)[1])
    kinds = [case.get("classname") for case in suite]
    assert kinds.count("before") == 1 and kinds.count("after") == 1
    assert kinds.count("method") == 2 and kinds.count("threshold") == 1
    assert kinds.count("rollback") == 1 and kinds.count("verdict") == 1


def test_a_load_control_summary_counts(tmp_path):
    journal = variant(lambda j: None)
    journal["pika_loads"] = {"baseline": {"thresholds_passed": False, "thresholds": {}}}
    assert judge(journal).outcome == "threshold-failed"


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"title": "x"}'])
def test_a_missing_or_broken_journal_is_unreadable(content, tmp_path):
    path = tmp_path / "journal.json"
    if content:
        path.write_text(content)
    done = subprocess.run(
        [str(CHAOSPIKA), "verdict", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == CODES["unreadable"]
    assert json.loads(done.stdout)["outcome"] == "unreadable"


def test_a_fault_the_safety_control_could_not_undo_fails_the_run():
    journal = variant(lambda j: None)
    journal["pika_safety"] = {"errors": ["undo of f1 failed"], "outstanding": ["f1"]}
    result = judge(journal)
    assert result.outcome == "rollback-failed"
    assert "faults left in force" in result.reasons[0]
