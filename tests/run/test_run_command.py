"""`chaospika run`: real `chaos run`s in a row, their folders, table and exit code."""

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest

from chaospika._ports import free_port
from chaospika.run.runner import (
    Outcome,
    batch_folder,
    experiment_names,
    summary_table,
    worst,
)
from chaospika.verdict.judge import Verdict

CHAOSPIKA = Path(sys.executable).with_name("chaospika")
STAMP = re.compile(r"\d{8}_\d{6}")


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    """A small HTTP server on a free loopback port, answering 200."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def experiment(folder: Path, name: str, method: list, marker: Path) -> Path:
    """An experiment whose hypothesis is: `marker` exists."""
    path = folder / f"{name}.json"
    body = {
        "version": "1.0.0",
        "title": f"{name} experiment",
        "description": "test",
        "steady-state-hypothesis": {
            "title": "the marker file exists",
            "probes": [
                {
                    "type": "probe",
                    "name": "marker-exists",
                    "tolerance": True,
                    "provider": {
                        "type": "python",
                        "module": "os.path",
                        "func": "exists",
                        "arguments": {"path": str(marker)},
                    },
                }
            ],
        },
        "method": method,
        "rollbacks": [],
    }
    path.write_text(json.dumps(body))
    return path


def load_action(url: str) -> dict:
    spec = {
        "scenarios": {
            "web": {
                "executor": "constant-vus",
                "vus": 2,
                "duration": "2s",
                "steps": [
                    {"request": {"method": "GET", "url": url}},
                    {"think": "50ms"},
                ],
            }
        },
        "thresholds": {"http_req_failed": ["rate==0"]},
    }
    return {
        "type": "action",
        "name": "load",
        "provider": {
            "type": "python",
            "module": "chaospika.load.actions",
            "func": "run_load",
            "arguments": {"name": "web", "spec": spec},
        },
    }


def sleeper() -> dict:
    return {
        "type": "probe",
        "name": "wait-a-minute",
        "pauses": {"after": 60},
        "provider": {
            "type": "python",
            "module": "os.path",
            "func": "exists",
            "arguments": {"path": "/"},
        },
    }


def chaospika_run(
    *args: str, cwd: Path, timeout: float = 120, sigint_ignored: bool = False
) -> subprocess.CompletedProcess:
    def ignore_sigint() -> None:  # as a shell starts a background job (`cmd &`)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.run(
        [str(CHAOSPIKA), "run", *args, "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=ignore_sigint if sigint_ignored else None,
    )


def only_batch(results: Path) -> Path:
    (folder,) = [p for p in results.iterdir() if p.is_dir()]
    assert STAMP.fullmatch(folder.name), folder.name
    return folder


def test_two_experiments_in_a_row_keep_their_files_and_exit_with_the_worst(
    web, tmp_path
):
    marker = tmp_path / "marker"
    marker.write_text("x")
    passing = experiment(tmp_path, "passing", [load_action(f"{web}/ok")], marker)
    remove = {
        "type": "action",
        "name": "remove-the-marker",
        "provider": {
            "type": "python",
            "module": "os",
            "func": "remove",
            "arguments": {"path": str(marker)},
        },
    }
    deviating = experiment(tmp_path, "deviating", [remove], marker)

    done = chaospika_run(str(passing), str(deviating), "--results", "out", cwd=tmp_path)

    assert done.returncode == 1, done.stdout + done.stderr
    batch = only_batch(tmp_path / "out")
    first = batch / "passing"
    assert {p.name for p in first.iterdir()} == {
        "journal.json",
        "chaostoolkit.log",
        "junit.xml",
        "report.html",
        "web-summary.json",
        "web-series.json",
    }
    journal = json.loads((first / "journal.json").read_text())
    requests = journal["run"][0]["output"]["metrics"]["http_reqs"]["count"]
    assert requests > 10
    export = json.loads((first / "web-summary.json").read_text())
    assert export["metrics"]["http_reqs"]["count"] == requests
    assert set(export) == {"metrics", "root_group"}
    series = json.loads((first / "web-series.json").read_text())["metrics"]
    per_second = series["http_reqs"]
    assert len(per_second) >= 2 and sum(p["count"] for p in per_second) == requests
    assert all(p["t"] > 0 for p in per_second)
    assert 'data-chart="rps"' in (first / "report.html").read_text()
    suite = ElementTree.parse(first / "junit.xml").getroot()
    assert suite.get("failures") == "0" and suite.get("name") == "passing experiment"

    second = batch / "deviating"
    assert {"journal.json", "junit.xml", "report.html"} <= {
        p.name for p in second.iterdir()
    }
    suite = ElementTree.parse(second / "junit.xml").getroot()
    assert int(suite.get("failures")) >= 2  # the verdict and the probe after

    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("EXPERIMENT"))
    assert re.match(r"passing\s+passed\s+0\s", lines[header + 1])
    assert re.search(rf"\s{requests}\s+0\s", lines[header + 1])
    assert re.match(r"deviating\s+deviated\s+1\s", lines[header + 2])
    assert "exit 1 (deviated)" in lines[-1]
    summary = json.loads((batch / "summary.json").read_text())
    assert [e["code"] for e in summary["experiments"]] == [0, 1]
    assert (batch / "summary.txt").read_text().splitlines()[-1] == "exit 1 (deviated)"


@pytest.mark.parametrize(
    "sigint_ignored", [False, True], ids=["shell", "background-job"]
)
def test_a_hung_experiment_is_stopped_and_a_missing_one_is_unreadable(
    sigint_ignored, tmp_path
):
    marker = tmp_path / "marker"
    marker.write_text("x")
    sleeping = experiment(tmp_path, "sleeping", [sleeper()], marker)
    started = time.monotonic()

    # 6 s: chaos reaches the method in ~2 s on a loaded 2-core machine; far from 60 s
    timeout = ["--timeout", "6"]
    done = chaospika_run(
        "missing.json",
        str(sleeping),
        "--results",
        "out",
        *timeout,
        cwd=tmp_path,
        sigint_ignored=sigint_ignored,
    )

    assert done.returncode == 7, done.stdout + done.stderr  # unreadable comes first
    assert time.monotonic() - started < 50  # not the 60 s pause
    batch = only_batch(tmp_path / "out")
    summary = json.loads((batch / "summary.json").read_text())
    missing, hung = summary["experiments"]
    assert (missing["outcome"], missing["files"]) == (
        "unreadable",
        ["chaostoolkit.log", "junit.xml"],
    )
    assert "wrote no journal" in missing["reasons"][0]
    assert hung["outcome"] == "interrupted"
    assert hung["reasons"][0] == "chaos was stopped after the 6 s timeout (SIGINT)"
    journal = json.loads((batch / "sleeping" / "journal.json").read_text())
    assert journal["status"] == "interrupted"


def test_sigterm_stops_the_running_experiment_and_skips_the_rest(tmp_path):
    marker = tmp_path / "marker"
    marker.write_text("x")
    sleeping = experiment(tmp_path, "sleeping", [sleeper()], marker)
    never = experiment(tmp_path, "never", [], marker)
    process = subprocess.Popen(
        [
            str(CHAOSPIKA),
            "run",
            str(sleeping),
            str(never),
            "--results",
            "out",
            "--quiet",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        log = tmp_path / "out"
        deadline = time.monotonic() + 60
        while not any(
            log.glob("*/sleeping/chaostoolkit.log")
        ) or "wait-a-minute" not in (
            next(log.glob("*/sleeping/chaostoolkit.log")).read_text()
        ):
            assert time.monotonic() < deadline, "chaos did not start the method"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 6, out + err
    batch = only_batch(tmp_path / "out")
    summary = json.loads((batch / "summary.json").read_text())
    assert [e["name"] for e in summary["experiments"]] == ["sleeping"]
    assert summary["not_run"] == ["never"]
    assert json.loads((batch / "sleeping" / "journal.json").read_text())["status"] == (
        "interrupted"
    )
    assert "not run (interrupted): never" in out
    assert not (batch / "never").exists()


def outcome(name: str, kind: str, **summary) -> Outcome:
    return Outcome(
        name, f"{name}.json", Path(name), Verdict(kind, [f"{kind}!"]), 1.0, summary
    )


def test_the_worst_outcome_follows_the_verdict_precedence():
    assert worst([outcome("a", "passed"), outcome("b", "passed")]) == "passed"
    assert (
        worst([outcome("a", "threshold-failed"), outcome("b", "deviated")])
        == "deviated"
    )
    assert worst(
        [outcome("a", "rollback-failed"), outcome("b", "activity-failed")]
    ) == ("activity-failed")
    assert (
        worst([outcome("a", "deviated"), outcome("b", "interrupted")]) == "interrupted"
    )
    assert worst([]) == "passed"


def test_summary_table_lines_up_and_lists_the_reasons():
    table = summary_table(
        [
            outcome(
                "worker-crash",
                "passed",
                requests_count=1559,
                failed_count=0,
                p95_ms=36.94,
                recovery_seconds=13.036,
                max_downtime_seconds=0.0,
                lost_count=0,
                stuck_count=0,
                duplicates_count=0,
            ),
            outcome("redis-outage", "deviated", lost_count=3),
        ]
    ).splitlines()
    assert table[0].split() == [
        "EXPERIMENT",
        "VERDICT",
        "EXIT",
        "TIME",
        "REQUESTS",
        "FAILED",
        "P95",
        "RECOVERY",
        "DOWNTIME",
        "LOST/STUCK/DUP",
    ]
    assert table[1].split() == [
        "worker-crash", "passed", "0", "1.0", "s", "1559", "0", "36.9", "ms",
        "13.04", "s", "0.00", "s", "0/0/0",
    ]  # fmt: skip
    assert table[2].split()[:3] == ["redis-outage", "deviated", "1"]
    assert table[2].endswith("3/-/-")
    assert table[1].index("passed") == table[0].index("VERDICT")
    assert table[1].index("1559") + 4 == table[0].index("REQUESTS") + len("REQUESTS")
    assert table[3:] == ["redis-outage:", "  - deviated!"]


def test_batch_folders_never_collide_and_names_are_unique(tmp_path):
    now = datetime(2025, 11, 15, 14, 30, 0)
    first, second = batch_folder(tmp_path, now), batch_folder(tmp_path, now)
    assert (first.name, second.name) == ("20251115_143000", "20251115_143000_2")
    assert experiment_names(["a/x.json", "b/x.json", "y.yaml", "a b.json"]) == [
        "x",
        "x-2",
        "y",
        "a_b",
    ]
    assert os.path.isdir(first) and os.path.isdir(second)
