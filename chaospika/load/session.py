"""A load run inside a Chaos Toolkit experiment, reachable by its name.

The run is a `chaospika.loadengine.LoadRun` on its own thread and event loop.
Probes ask it questions (a threshold verdict, a metric, the values captured so
far) that are answered on that loop at its next one-second tick, so nothing
reads the registry or the captures while the engine writes them. A spec with
`"engine": "k6"` runs on the real k6 binary: its samples reach the registry
about once a second, so live answers are up to ~2 s behind k6, and exact once
the run has ended.
"""

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from chaospika import _records
from chaospika.loadengine import LoadResult, LoadRun, progress_line

__all__ = ["RECORD_KIND", "LoadSession", "get_session", "load_spec_file"]

logger = logging.getLogger("chaostoolkit")
RECORD_KIND = "load"

_sessions: dict[str, "LoadSession"] = {}
_sessions_lock = threading.Lock()


def load_spec_file(path: str) -> dict:
    """Read a JSON load specification from `path` (``~`` expanded)."""
    with open(os.path.expanduser(path)) as handle:
        return json.load(handle)


def get_session(name: str) -> "LoadSession | None":
    """The load session started under `name` in this process, if any."""
    with _sessions_lock:
        return _sessions.get(name)


class LoadSession:
    """One named run of the load engine, its record and its live questions."""

    def __init__(
        self,
        name: str,
        spec: Mapping,
        max_duration: float | None,
        log_summary: bool = True,
        show_progress: Callable[[dict], None] | None = None,
    ) -> None:
        self.name = name
        self.log_summary = log_summary  # False: the caller prints it (the CLI)
        self.show_progress = show_progress or self._log_progress
        self.run_handle = LoadRun(
            spec,
            max_duration=max_duration,
            on_progress=self.show_progress,  # the engine logs what it raises
            on_end=self._save,
            name=name,
        )
        self.load = self.run_handle.spec
        self.done = self.run_handle.done
        with _sessions_lock:
            _sessions[name] = self
        _records.put(RECORD_KIND, name, {"name": name, "running": True})

    @property
    def result(self) -> LoadResult | None:
        return self.run_handle.result

    @property
    def error(self) -> BaseException | None:
        return self.run_handle.error

    @property
    def progress(self) -> dict:
        return self.run_handle.progress

    # -- running --------------------------------------------------------------
    def run(self) -> LoadResult:
        """Run to the end on the calling thread and return the result."""
        return self.run_handle.run()

    def start(self) -> None:
        """Run on a daemon thread; `wait` or `stop` end it."""
        self.run_handle.start()

    def request_stop(self) -> None:
        """Ask the run to stop; no lock, no wait: safe in a signal handler."""
        self.run_handle.request_stop()

    def stop(self, timeout: float = 60.0) -> LoadResult | None:
        """Ask the run to stop, wait for it, and return its result.

        Whether it did stop within `timeout` is `self.done.is_set()`.
        """
        return self.run_handle.stop(timeout)

    def wait(self, timeout: float | None = None) -> LoadResult | None:
        """Wait until the run has ended; its result (None if it failed)."""
        return self.run_handle.wait(timeout)

    # -- live questions -------------------------------------------------------
    def ask(self, question: Callable[[LoadRun], Any]) -> Any:
        """Evaluate `question(run)` (read `run.registry`) safely while it runs."""
        return self.run_handle.ask(question)

    def _log_progress(self, progress: dict) -> None:
        logger.info("load '%s' %s", self.name, progress_line(progress))

    def captured(self, key: str) -> list:
        """The values captured under `key` so far (live), or at the end."""
        if self.done.is_set() and self.result is None:  # the run failed
            return []
        return self.ask(lambda run: self._captured_now(run, key))

    def _captured_now(self, run: LoadRun, key: str) -> list:
        """On the engine's thread (or after the run): the result's, else the live."""
        result = run.result
        captures = run.live_captures if result is None else result.captures
        return list(_flatten(captures).get(key, []))

    # -- record ---------------------------------------------------------------
    def thresholds(self) -> dict:
        """Threshold verdicts now (live) or at the end."""
        return self.run_handle.thresholds()

    def summary(self) -> dict:
        """A JSON-friendly summary of the finished run for the journal."""
        result = self.result
        if result is None:
            if self.error is None:
                return {"name": self.name, "running": not self.done.is_set()}
            return {"name": self.name, "error": repr(self.error)}
        captures = _flatten(result.captures)
        return {
            "name": self.name,
            "thresholds_passed": result.thresholds_passed,
            "thresholds": result.thresholds,
            "aborted": result.aborted,
            "stopped_by": result.stopped_by,
            "duration_s": round(result.duration_s, 3),
            "warnings": list(result.warnings),
            "metrics": result.summary_export.get("metrics", {}),
            "root_group": result.summary_export.get("root_group", {}),
            "captures": captures,
        }

    def _save(self, run: LoadRun) -> None:
        record = self.summary()
        record["running"] = False
        record["captures_by_scenario"] = self.result.captures if self.result else {}
        _records.put(RECORD_KIND, self.name, record)
        if self.result is not None and self.log_summary:
            logger.info("load '%s' summary\n%s", self.name, self.result.summary_text)


def _flatten(captures: Mapping[str, Mapping[str, list]]) -> dict[str, list]:
    """{scenario: {key: values}} -> {key: values of every scenario}."""
    merged: dict[str, list] = {}
    for per_key in captures.values():
        for key, values in per_key.items():
            merged.setdefault(key, []).extend(values)
    return merged
