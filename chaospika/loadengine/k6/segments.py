"""`"segments": N` with engine k6: N k6 processes at once, one execution segment each.

k6 cuts a test into execution segments: `--execution-segment 1/3:2/3` within
`--execution-segment-sequence 0,1/3,2/3,1` runs the second third of every
scenario's VUs and iterations. grafana/k6-operator spreads a test over pods so;
here the N processes run on this machine, each in its own folder with its own
summary export and CSV sample feed (samples.py), and every sample of every
process goes into the run's one registry. The merged result is therefore
computed from the raw samples, as a single run's would be:

- counters are summed; rates count the passes and fails of all processes;
- trends hold every process's samples: min, max and avg are exact, and the
  percentiles are exact too up to percentiles.EXACT_LIMIT samples (HDR beyond, as
  for one process). Values are k6's CSV values (six decimals).
- the `vus` and `vus_max` gauges are the sum of each process's latest value,
  recorded once every process has reported (k6 reports each second; a process
  stopped in its first second adds its export's value at the end); other
  gauges keep the latest value of any process;
- thresholds are judged on the merged samples by our evaluator; the processes
  run with --no-thresholds (one third of the test would cross `count>=N`), and
  abortOnFail is checked on the merged samples every 2 s, as k6 does.

{{counter}} values stay unique: each process numbers with its segment index.
The run is bounded like one k6 run (runner.py): at the stop event, the deadline,
an abort or a failing process, every process still running gets SIGINT, and
SIGKILL KILL_GRACE s later. A process that fails (an exit code other than
0, 99, 105 or 108, or no summary export) fails the run with K6Error naming its
segment.
"""

import dataclasses
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from chaospika.loadengine.k6.results import json_lines, read_console, run_duration, tail
from chaospika.loadengine.k6.runner import (
    EXIT_ABORTED,
    EXIT_SIGNAL,
    KILL_GRACE,
    MAX_WARNINGS,
    POLL,
    RESULT_CODES,
    K6Error,
    _K6Run,
    report_second,
)
from chaospika.loadengine.k6.samples import SampleFeed
from chaospika.loadengine.k6.script import K6Script
from chaospika.loadengine.parent_death import death_signal_setter
from chaospika.loadengine.progress import ProgressMeter
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.runner import (
    LoadResult,
    ProgressCallback,
    load_result,
)
from chaospika.loadengine.scenario import LoadSpec
from chaospika.loadengine.vu import merge_captures

__all__ = ["run_segments", "segment_flags", "segment_source"]

logger = logging.getLogger("chaostoolkit")

ABORT_EVERY = 2.0  # seconds between two abortOnFail checks (k6's period)
SUMMED_GAUGES = ("vus", "vus_max")
NO_ITERATIONS = "No script iterations fully finished"  # k6, of a process's share
COUNTER_LINE = "return (pikaCount - 1) * PIKA_COUNTER_STRIDE + __VU;"


def segment_flags(index: int, count: int) -> list[str]:
    """k6's flags for segment `index` (from 0) of `count` equal segments."""
    bounds = ["0", *(f"{i}/{count}" for i in range(1, count)), "1"]
    return [
        "--execution-segment",
        f"{bounds[index]}:{bounds[index + 1]}",
        "--execution-segment-sequence",
        ",".join(bounds),
    ]


def segment_source(source: str, index: int, count: int) -> str:
    """The script of segment `index`: its {{counter}} values differ from the others'."""
    if COUNTER_LINE not in source:
        logger.warning("k6 segments: {{counter}} values may repeat across segments")
        return source
    unique = (
        f"return ((pikaCount - 1) * {count} + {index}) * PIKA_COUNTER_STRIDE + __VU;"
    )
    return source.replace(COUNTER_LINE, unique)


def run_segments(
    load: LoadSpec,
    registry: Registry,
    script: K6Script,
    binary: str,
    deadline: float,
    stop_event: Any = None,
    on_progress: ProgressCallback | None = None,
) -> LoadResult:
    """Run `load` as `load.segments` k6 processes, their samples into `registry`."""
    count = load.segments
    with tempfile.TemporaryDirectory(prefix="pika-k6-segments-") as folder:
        segments = []
        for index in range(count):
            place = Path(folder) / f"segment-{index + 1}"
            place.mkdir()
            own = dataclasses.replace(
                script, source=segment_source(script.source, index, count)
            )
            segments.append(
                _Segment(load, registry, own, binary, place, deadline, index)
            )
        return _Segments(load, registry, segments, deadline).run(
            stop_event, on_progress
        )


class _GaugeSums:
    """`vus` and `vus_max` of all processes: the sum of each one's latest value,
    recorded once every process has sent one (no partial sum at the start)."""

    def __init__(self, registry: Any, count: int) -> None:
        self.registry = registry
        self.latest: dict[str, list] = {name: [None] * count for name in SUMMED_GAUGES}
        self.recorded: set[str] = set()

    def add(self, index: int, name: str, value: float, tags: dict | None) -> None:
        slots = self.latest[name]
        slots[index] = value
        if None not in slots:
            self.registry.add(name, sum(slots), tags)
            self.recorded.add(name)

    def finish(self, exports: list[dict]) -> None:
        """If a process never reported one (stopped within its first second), sum
        once with the last value of its summary export (if it has one)."""
        for name, slots in self.latest.items():
            if name in self.recorded:
                continue
            for index, export in enumerate(exports):
                last = export.get("metrics", {}).get(name, {}).get("value")
                if slots[index] is None and isinstance(last, (int, float)):
                    slots[index] = last
            sent = [value for value in slots if value is not None]
            if sent:
                self.registry.add(name, sum(sent))


class _Recorder:
    """One process's view of the shared registry (SampleFeed records through it)."""

    def __init__(self, registry: Any, sums: _GaugeSums, index: int) -> None:
        self.registry = registry
        self.sums = sums
        self.index = index

    def __contains__(self, name: str) -> bool:
        return name in self.registry

    def add(self, name: str, value: float, tags: dict | None = None) -> None:
        if name in SUMMED_GAUGES:
            self.sums.add(self.index, name, value, tags)
        else:
            self.registry.add(name, value, tags)


class _Segment(_K6Run):
    """One k6 process: `k6 run` of one execution segment, thresholds off."""

    def __init__(
        self,
        load: LoadSpec,
        registry: Registry,
        script: K6Script,
        binary: str,
        folder: Path,
        deadline: float,
        index: int,
    ) -> None:
        super().__init__(load, registry, script, binary, folder, deadline)
        self.index = index
        self.flags = segment_flags(index, load.segments)
        self.label = f"segment {index + 1}/{load.segments} ({self.flags[1]})"
        self.process: subprocess.Popen | None = None
        self.feed: SampleFeed | None = None

    def command(self) -> list[str]:
        command = super().command()
        return [*command[:-1], *self.flags, "--no-thresholds", command[-1]]

    def start(self, recorder: _Recorder) -> None:
        """Start k6 on its own FIFO of samples."""
        command = self.command()
        fifo = self.folder / "samples.csv"
        os.mkfifo(fifo)
        self.feed = SampleFeed(str(fifo), recorder, self.script.tag_names)
        with (
            open(self.folder / "stdout.txt", "wb") as stdout,
            open(self.folder / "stderr.log", "wb") as stderr,
        ):
            self.process = subprocess.Popen(
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
        logger.info("load on k6: %s, PID %d", self.label, self.process.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def failed(self) -> bool:
        """True once k6 exited with a code that is not a result."""
        code = None if self.process is None else self.process.poll()
        return code is not None and code not in RESULT_CODES

    def export(self) -> dict:
        """k6's summary export of this segment; K6Error if k6 failed."""
        code = self.process.returncode if self.process else None
        if self.killed:
            raise K6Error(
                f"k6 {self.label} did not stop within {KILL_GRACE:g} s of SIGINT "
                "and was killed; no results"
            )
        path = self.folder / "summary.json"
        if code not in RESULT_CODES or not path.exists():
            messages = [str(line.get("msg", "")) for line in self.logs()]
            detail = "\n".join(messages[-10:]) or tail(self.folder / "stderr.log")
            raise K6Error(f"k6 {self.label} failed with exit code {code}:\n{detail}")
        return json.loads(path.read_text())

    def logs(self) -> list[dict]:
        return list(json_lines(self.folder / "stderr.log"))


class _Segments:
    """The N processes of one run: start, watch, stop, merge."""

    def __init__(
        self,
        load: LoadSpec,
        registry: Registry,
        segments: list[_Segment],
        deadline: float,
    ) -> None:
        self.load = load
        self.registry = registry
        self.segments = segments
        self.deadline = deadline
        self.stopped_by: str | None = None
        self.cause: _Segment | None = None  # the first process that failed
        self.signalled_at: float | None = None
        self.last_tick = 0.0
        self.meter = ProgressMeter()
        self.sums = _GaugeSums(registry, len(segments))

    def run(self, stop_event: Any, on_progress: ProgressCallback | None) -> LoadResult:
        started = time.monotonic()
        try:
            for segment in self.segments:
                recorder = _Recorder(self.registry, self.sums, segment.index)
                segment.start(recorder)
            self._watch(started, stop_event, on_progress)
            for segment in self.segments:
                segment.feed.drain()
        finally:
            for segment in self.segments:
                if segment.running:
                    segment.process.kill()
                    segment.process.wait()
                if segment.feed is not None:
                    segment.feed.close()
        return self._result(time.monotonic() - started)

    def _watch(
        self, started: float, stop_event: Any, on_progress: ProgressCallback | None
    ) -> None:
        """Feed samples, report each second, stop every process when one must."""
        second, next_abort = 1, ABORT_EVERY
        pump = POLL / len(self.segments)
        while any(segment.running for segment in self.segments):
            for segment in self.segments:
                segment.feed.pump(pump)
            elapsed = time.monotonic() - started
            if self.signalled_at is None:
                reason = self._stop_reason(stop_event, elapsed)
                if reason is None and elapsed >= next_abort:
                    next_abort += ABORT_EVERY
                    if self.load.thresholds.check_abort(self.registry, elapsed):
                        reason = "threshold"
                if reason is not None:
                    self._interrupt(reason, elapsed)
            elif elapsed >= self.signalled_at + KILL_GRACE:
                for segment in self.segments:
                    if segment.running:
                        logger.error("k6 %s ignored SIGINT; killing it", segment.label)
                        segment.killed = True
                        segment.process.kill()
                        segment.process.wait()
            if elapsed >= second:
                self._second(elapsed, on_progress)
                second = int(elapsed) + 1

    def _stop_reason(self, stop_event: Any, elapsed: float) -> str | None:
        for segment in self.segments:
            if segment.failed:
                self.cause = segment
                return "failure"
        if stop_event is not None and stop_event.is_set():
            return "stop_event"
        if elapsed >= self.deadline:
            return "max_duration"
        return None

    def _interrupt(self, reason: str, elapsed: float) -> None:
        logger.info("load on k6: stopping every segment: %s", reason)
        self.stopped_by = reason
        self.signalled_at = elapsed
        for segment in self.segments:
            if segment.running:
                segment.process.send_signal(signal.SIGINT)  # k6 stops as on Ctrl-C

    def _second(self, elapsed: float, on_progress: ProgressCallback | None) -> None:
        self.last_tick = elapsed
        report_second(self.registry, self.meter, elapsed, on_progress)

    def _result(self, wall: float) -> LoadResult:
        if self.cause is not None:  # the cause, not a process it made stop
            self.cause.export()  # raises K6Error
        exports = [segment.export() for segment in self.segments]
        self.sums.finish(exports)
        durations = [run_duration(export) or 0.0 for export in exports]
        duration = max(durations) or wall
        registry = self.registry
        registry.tick(max(duration, self.last_tick))  # series times never go back
        registry.elapsed = duration
        codes = [segment.process.returncode for segment in self.segments]
        stopped_by = self.stopped_by
        if EXIT_ABORTED in codes:
            stopped_by = "threshold"
        elif stopped_by is None and EXIT_SIGNAL in codes:
            stopped_by = "signal"
        return load_result(
            self.load,
            registry,
            duration,
            self._captures(),
            self._outcomes(),
            stopped_by,
            self._warnings(),
        )

    def _captures(self) -> dict:
        captures: dict[str, dict[str, list]] = {
            name: {} for name in self.load.scenarios
        }
        for segment in self.segments:
            found, warnings = read_console(
                segment.folder / "console.log", self.load.scenarios
            )
            for scenario, values in found.items():
                merge_captures(captures.setdefault(scenario, {}), values, scenario)
            for message in warnings:
                logger.warning("load iteration stopped: %s", message)
        return captures

    def _outcomes(self) -> dict[str, dict]:
        """Per scenario what the k6 processes counted together."""
        outcomes = {}
        for name, scenario in self.load.scenarios.items():
            feeds = [segment.feed for segment in self.segments]
            outcomes[name] = {
                "scenario": name,
                "executor": scenario.config.executor,
                "completed": sum(feed.iterations[name] for feed in feeds),
                "interrupted": None,
                "dropped": sum(feed.dropped[name] for feed in feeds),
                "errors": None,
                "started": scenario.config.start_time,
                "ended": None,
            }
        return outcomes

    def _warnings(self) -> list[str]:
        """k6's warnings of each process (not "no iteration" of one without VUs)."""
        warnings: list[str] = []
        ran = self.registry.stats("iterations")["count"] > 0
        for segment in self.segments:
            for line in segment.logs():
                if ran and str(line.get("msg", "")).startswith(NO_ITERATIONS):
                    continue
                if line.get("level") in ("warning", "error"):
                    text = f"k6 {segment.label}: {line.get('msg', '')}"
                    if text not in warnings and len(warnings) < MAX_WARNINGS:
                        warnings.append(text)
        return warnings
