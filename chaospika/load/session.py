"""A load run inside a Chaos Toolkit experiment, reachable by its name.

The run executes on its own thread and event loop. Probes ask it questions
(a threshold verdict, a metric) that are answered on that loop at its next
one-second tick, so nothing reads the registry while the engine writes it.
A spec with `"engine": "k6"` runs on the real k6 binary (chaospika.loadengine.k6):
its samples reach the registry about once a second, so live answers are up
to ~2 s behind k6, and exact once the run has ended.
"""

import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from chaospika import _records
from chaospika.loadengine.k6 import run_k6
from chaospika.loadengine.lifecycle import StopFlag, active_run
from chaospika.loadengine.runner import LoadResult, either, run
from chaospika.loadengine.scenario import LoadSpec, parse_spec

__all__ = ["RECORD_KIND", "LoadSession", "get_session", "load_spec_file"]

logger = logging.getLogger("chaostoolkit")
RECORD_KIND = "load"
ANSWER_TIMEOUT_S = 5.0

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
    ) -> None:
        self.name = name
        self.log_summary = log_summary  # False: the caller prints it (the CLI)
        self.load: LoadSpec = parse_spec(spec)
        self.max_duration = max_duration
        self.stop_event = StopFlag()  # lock-free: `stop` is safe in a signal handler
        self.done = threading.Event()
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self.progress: dict = {}
        self._questions: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        with _sessions_lock:
            _sessions[name] = self
        _records.put(RECORD_KIND, name, {"name": name, "running": True})

    # -- running --------------------------------------------------------------
    def run(self) -> LoadResult:
        """Run to the end on the calling thread and return the result."""
        engine = run_k6 if self.load.engine == "k6" else run
        try:
            with active_run() as flag:  # stop_all() reaches the k6 engine too
                self.result = engine(
                    self.load,
                    max_duration=self.max_duration,
                    on_progress=self._on_progress,
                    stop_event=either(flag, self.stop_event),
                )
            return self.result
        except BaseException as error:
            self.error = error
            raise
        finally:
            self._answer_pending()
            self.done.set()
            self._save()

    def start(self) -> None:
        """Run on a daemon thread; `wait` or `stop` end it."""
        self._thread = threading.Thread(
            target=self._run_quietly, name=f"pika-load-{self.name}", daemon=True
        )
        self._thread.start()

    def _run_quietly(self) -> None:
        try:
            self.run()
        except Exception:
            logger.exception("load '%s' failed", self.name)

    def request_stop(self) -> None:
        """Ask the run to stop; no lock, no wait: safe in a signal handler."""
        self.stop_event.set()

    def stop(self, timeout: float = 60.0) -> LoadResult | None:
        """Ask the run to stop, wait for it, and return its result.

        Whether it did stop within `timeout` is `self.done.is_set()`.
        """
        self.request_stop()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> LoadResult | None:
        """Wait until the run has ended; its result (None if it failed)."""
        self.done.wait(timeout)
        return self.result

    # -- live questions -------------------------------------------------------
    def ask(self, question: Callable[[LoadSpec], Any]) -> Any:
        """Evaluate `question(load)` safely: on the engine's loop while it runs."""
        if self.done.is_set():
            return question(self.load)
        answer: Future = Future()
        self._questions.put((question, answer))
        if self.done.is_set():  # ended meanwhile: no tick will come
            self._answer_pending()
        return answer.result(timeout=ANSWER_TIMEOUT_S + 1.5)

    def _answer_pending(self) -> None:
        while True:
            try:
                question, answer = self._questions.get_nowait()
            except queue.Empty:
                return
            try:
                answer.set_result(question(self.load))
            except Exception as error:  # noqa: BLE001 - handed to the asker
                answer.set_exception(error)

    def _on_progress(self, progress: dict) -> None:
        self.progress = progress
        self._answer_pending()
        logger.info(
            "load '%s' %5.1fs  vus=%d  iterations=%d  rps=%.0f  errors=%d%s",
            self.name,
            progress["elapsed"],
            progress["vus"],
            progress["iterations"],
            progress["rps"],
            progress["errors"],
            f"  WARNING {progress['warning']}" if progress.get("warning") else "",
        )

    # -- record ---------------------------------------------------------------
    def thresholds(self) -> dict:
        """Threshold verdicts now (live) or at the end."""
        if self.result is not None:
            return self.result.thresholds
        return self.ask(lambda load: load.thresholds.final(load.registry))

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

    def _save(self) -> None:
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
