"""Run experiments in a row, each into its own folder, and judge them all.

``results/YYYYMMDD_HHMMSS/<experiment>/`` gets, per experiment:

- ``journal.json`` and ``chaostoolkit.log`` (``chaos --log-file ... run
  --journal-path ...``, with the load-series control `chaospika.report.control`);
- ``<load>-summary.json`` (k6's ``--summary-export`` shape: ``metrics`` and
  ``root_group``) and ``<load>-series.json`` (one point per metric and second)
  for each load the journal shows;
- ``junit.xml`` (`chaospika verdict`'s JUnit) and ``report.html`` (`chaospika report`).

The batch folder gets ``summary.txt`` (the table printed) and ``summary.json``.
The exit code is the worst verdict: the one that comes first in the verdict's
precedence (unreadable, interrupted, baseline not met, deviated, activity
failed, threshold failed, rollback failed), 0 when every experiment passed.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

from chaospika.report.facts import facts, load_summaries
from chaospika.report.html import render_html
from chaospika.verdict.cli import read_verdict
from chaospika.verdict.judge import CODES, PRECEDENCE, Verdict
from chaospika.verdict.junit import junit_xml

__all__ = [
    "Outcome",
    "batch_folder",
    "chaos_argv",
    "experiment_names",
    "run_batch",
    "run_experiment",
    "summary_table",
    "worst",
    "write_artifacts",
]

CONTROL_NAME = "pika-load-series"
GRACE_SECONDS = 120.0  # after SIGINT, how long chaos may take to roll back
STOP_SECONDS = 10.0  # after SIGTERM, before SIGKILL
FORWARD_AFTER_SECONDS = 2.0  # Ctrl-C reached chaos too, unless sent to us alone


@dataclass
class Outcome:
    """One experiment of the batch: where its files are and how it went."""

    name: str
    experiment: str
    folder: Path
    verdict: Verdict
    seconds: float
    summary: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    def as_dict(self) -> dict:
        """JSON-friendly form (summary.json)."""
        return {
            "name": self.name,
            "experiment": self.experiment,
            "folder": str(self.folder),
            "outcome": self.verdict.outcome,
            "code": self.verdict.code,
            "reasons": self.verdict.reasons,
            "seconds": round(self.seconds, 3),
            "summary": self.summary,
            "files": self.files,
            "notes": self.notes,
        }


def batch_folder(results: str | os.PathLike, now: datetime | None = None) -> Path:
    """Create and return ``results/YYYYMMDD_HHMMSS`` (``_2``, ``_3``... if taken)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d_%H%M%S")
    root = Path(results)
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        folder = root / (stamp if attempt == 1 else f"{stamp}_{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"no free results folder for {stamp} in {root}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "x"


def experiment_names(paths: Sequence[str]) -> list[str]:
    """Folder names for the experiments: their file names without extension, made unique."""
    names: list[str] = []
    for path in paths:
        base = _safe(Path(path).stem)
        name, number = base, 1
        while name in names:
            number += 1
            name = f"{base}-{number}"
        names.append(name)
    return names


def chaos_argv(
    experiment: str, folder: Path, control_file: Path, options: Iterable[str] = ()
) -> list[str]:
    """`chaos run` of `experiment` with its log and journal in `folder`."""
    return [
        sys.executable,
        "-m",
        "chaostoolkit",
        "--log-file",
        str(folder / "chaostoolkit.log"),
        "--no-version-check",
        "run",
        "--journal-path",
        str(folder / "journal.json"),
        "--control-file",
        str(control_file),
        *options,
        experiment,
    ]


def _default_interrupts() -> None:
    """In the chaos child: SIGINT and SIGTERM back to their defaults.

    A shell starts a background job (`chaospika run ... &` in a CI script) with
    SIGINT ignored, and children inherit that: chaos would then ignore the
    SIGINT that stops it at `timeout`, and run on without rolling back.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _end(process: subprocess.Popen, grace: float) -> str:
    """Stop `process`: SIGINT (it rolls back), then SIGTERM, then SIGKILL."""
    for sig, patience in (
        (signal.SIGINT, grace),
        (signal.SIGTERM, STOP_SECONDS),
        (signal.SIGKILL, STOP_SECONDS),
    ):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        try:
            process.wait(patience)
        except subprocess.TimeoutExpired:
            continue
        return signal.Signals(sig).name
    return "it ended by itself"


def _wait(process: subprocess.Popen, timeout: float, grace: float) -> str | None:
    """Wait for `process`; stop it after `timeout` or on Ctrl-C. Why it was stopped."""
    try:
        process.wait(timeout)
        return None
    except subprocess.TimeoutExpired:
        how = _end(process, grace)
        return f"stopped after the {timeout:g} s timeout ({how})"
    except KeyboardInterrupt:
        try:
            process.wait(FORWARD_AFTER_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:  # a second Ctrl-C: no more patience
            grace = STOP_SECONDS
        how = _end(process, grace)
        raise KeyboardInterrupt(how) from None


def write_artifacts(journal: dict, folder: Path) -> list[str]:
    """Write each load's summary export and series beside the journal; their names."""
    written = []
    for name, summary in load_summaries(journal).items():
        path = folder / f"{_safe(name)}-summary.json"
        export = {
            "metrics": summary.get("metrics", {}),
            "root_group": summary.get("root_group", {}),
        }
        path.write_text(json.dumps(export, indent=2) + "\n")
        written.append(path.name)
    for name, series in (journal.get("pika_series") or {}).items():
        path = folder / f"{_safe(name)}-series.json"
        path.write_text(json.dumps(series, indent=1) + "\n")
        written.append(path.name)
    return written


def _summary(found: dict) -> dict:
    ids = found["ids"]
    return {
        "requests_count": found["requests_count"],
        "failed_count": found["failed_count"],
        "p95_ms": found["p95_ms"],
        "recovery_seconds": found["recovery"]["seconds"],
        "recovery_source": found["recovery"]["source"],
        "max_downtime_seconds": found["max_downtime"]["seconds"],
        "max_downtime_source": found["max_downtime"]["source"],
        **{f"{kind}_count": ids.get(f"{kind}_count") for kind in ("lost", "stuck")},
        "duplicates_count": ids.get("duplicates_count"),
        "faults_count": len(found["faults"]),
    }


def run_experiment(
    experiment: str,
    folder: Path,
    control_file: Path,
    options: Iterable[str] = (),
    timeout: float = 3600.0,
    quiet: bool = False,
    grace: float = GRACE_SECONDS,
) -> Outcome:
    """Run one experiment into `folder` and write its verdict, JUnit and report.

    Ctrl-C (KeyboardInterrupt) stops `chaos` too; the files are written for
    what it left and the outcome is marked `interrupted`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    output = subprocess.DEVNULL if quiet else None
    started = time.monotonic()
    process = subprocess.Popen(
        chaos_argv(experiment, folder, control_file, options),
        stdout=output,
        stderr=output,
        preexec_fn=_default_interrupts,  # noqa: PLW1509 - two signal() calls, no lock
    )
    interrupted = False
    try:
        stopped = _wait(process, timeout, grace)
    except KeyboardInterrupt as error:
        interrupted, stopped = True, f"interrupted ({error})"
    seconds = time.monotonic() - started
    outcome = _judge(experiment, folder, seconds, stopped, process.returncode)
    outcome.interrupted = interrupted
    return outcome


def _judge(
    experiment: str,
    folder: Path,
    seconds: float,
    stopped: str | None,
    returncode: int | None = None,
) -> Outcome:
    """Judge what `chaos` left in `folder`; write the JUnit, load files and report."""
    journal_path = folder / "journal.json"
    verdict = read_verdict(str(journal_path))
    if not journal_path.exists():
        log = folder / "chaostoolkit.log"
        verdict.reasons = [
            f"chaos exited with {returncode} and wrote no journal (see {log})"
        ]
    if stopped and verdict.outcome == "passed":
        verdict = Verdict(
            "interrupted",
            verdict.reasons,
            verdict.checks,
            verdict.title,
            verdict.status,
        )
    if stopped:
        verdict.reasons.insert(0, f"chaos was {stopped}")
    verdict.title = verdict.title or Path(experiment).stem
    outcome = Outcome(folder.name, experiment, folder, verdict, seconds)
    (folder / "junit.xml").write_text(junit_xml(verdict))
    try:
        journal = json.loads(journal_path.read_text())
    except (OSError, ValueError):
        journal = None
    if not isinstance(journal, dict):
        journal = None
    if journal is not None:
        try:
            outcome.files += write_artifacts(journal, folder)
            found = facts(journal)
            outcome.summary = _summary(found)
            (folder / "report.html").write_text(render_html(journal, found))
        except Exception as error:  # noqa: BLE001 - keep the verdict whatever happens
            outcome.notes.append(f"report failed: {type(error).__name__}: {error}")
    known = ["journal.json", "chaostoolkit.log", "junit.xml", "report.html"]
    outcome.files = [f for f in known + outcome.files if (folder / f).exists()]
    return outcome


def worst(outcomes: Iterable[Outcome]) -> str:
    """The worst outcome: first in the verdict's precedence, else "passed"."""
    found = {outcome.verdict.outcome for outcome in outcomes}
    return next((name for name in PRECEDENCE if name in found), "passed")


def _number(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def summary_table(outcomes: Sequence[Outcome]) -> str:
    """The table `chaospika run` prints: one line per experiment, then the reasons."""
    header = (
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
    )
    rows = [header]
    for outcome in outcomes:
        s = outcome.summary
        ids = "/".join(
            "-" if s.get(key) is None else str(s[key])
            for key in ("lost_count", "stuck_count", "duplicates_count")
        )
        rows.append(
            (
                outcome.name,
                outcome.verdict.outcome,
                str(outcome.verdict.code),
                _number(outcome.seconds, " s"),
                _number(s.get("requests_count"), digits=0),
                _number(s.get("failed_count"), digits=0),
                _number(s.get("p95_ms"), " ms"),
                _number(s.get("recovery_seconds"), " s", 2),
                _number(s.get("max_downtime_seconds"), " s", 2),
                ids,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if index < 2 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    for outcome in outcomes:
        if outcome.verdict.code or outcome.notes:
            lines.append(f"{outcome.name}:")
            for reason in outcome.verdict.reasons:
                lines.append(f"  - {reason}")
            for note in outcome.notes:
                lines.append(f"  ! {note}")
    return "\n".join(lines)


def _write_control_file(folder: Path) -> Path:
    path = folder / "controls.json"
    control = {
        CONTROL_NAME: {
            "provider": {"type": "python", "module": "chaospika.report.control"}
        }
    }
    path.write_text(json.dumps(control, indent=2) + "\n")
    return path


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_batch(
    experiments: Sequence[str],
    results: str | os.PathLike = "results",
    options: Iterable[str] = (),
    timeout: float = 3600.0,
    quiet: bool = False,
    grace: float = GRACE_SECONDS,
    out=None,
) -> tuple[Path, list[Outcome], int]:
    """Run `experiments` in a row; return the batch folder, the outcomes, the exit code.

    SIGTERM is handled like Ctrl-C while the batch runs: the running `chaos` is
    stopped (it rolls back), the experiments not started are not run.
    """
    out = out or sys.stdout
    folder = batch_folder(results)
    control_file = _write_control_file(folder)
    options = list(options)
    outcomes: list[Outcome] = []
    skipped: list[str] = []
    previous = None
    if _in_main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        names = experiment_names(experiments)
        for index, (experiment, name) in enumerate(
            zip(experiments, names, strict=True)
        ):
            print(f"== {name}: chaos run {experiment}", file=out, flush=True)
            outcome = run_experiment(
                os.path.abspath(experiment),
                folder / name,
                control_file,
                options,
                timeout,
                quiet,
                grace,
            )
            outcomes.append(outcome)
            if outcome.interrupted:
                skipped = list(names[index + 1 :])
                break
            print(
                f"== {name}: {outcome.verdict.outcome} (exit {outcome.verdict.code}) "
                f"in {outcome.seconds:.1f} s",
                file=out,
                flush=True,
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    table = summary_table(outcomes)
    outcome_name = worst(outcomes)
    code = CODES[outcome_name]
    lines = [table]
    if skipped:
        lines.append(f"not run (interrupted): {', '.join(skipped)}")
    lines.append(f"results: {folder}")
    lines.append(f"exit {code} ({outcome_name})")
    text = "\n".join(lines)
    (folder / "summary.txt").write_text(text + "\n")
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "folder": str(folder),
                "outcome": outcome_name,
                "code": code,
                "experiments": [outcome.as_dict() for outcome in outcomes],
                "not_run": skipped,
            },
            indent=2,
        )
        + "\n"
    )
    print(text, file=out, flush=True)
    return folder, outcomes, code


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
