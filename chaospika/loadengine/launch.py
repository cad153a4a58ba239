"""Start a run of a load spec: here or on worker processes, on pika or on k6.

`run(spec)` blocks to the end (its own event loop, uvloop when installed);
`run_async(spec)` runs on the caller's loop. `LoadRun(spec)` is the same run as
a handle: its registry exists before the start (attach outputs to it), it runs
on the caller's thread (`run()`) or its own (`start()`), `stop()` ends it, and
`ask()` reads its metrics safely while it runs. Every run records into a
registry of its own (`LoadSpec.new_registry()` unless one is given).
`processes: N` runs go to processes.py (spawned workers, so a script calling
`run()` needs the usual `if __name__ == "__main__":` guard), `"engine": "k6"`
runs to k6/.
"""

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from chaospika.loadengine.lifecycle import StopFlag, active_run
from chaospika.loadengine.processes import run_processes
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.runner import (
    LoadResult,
    ProgressCallback,
    loop_factory,
    run_here,
)
from chaospika.loadengine.scenario import LoadSpec, as_spec

__all__ = ["LoadRun", "run", "run_async"]

logger = logging.getLogger("chaostoolkit")

ANSWER_TIMEOUT_S = 5.0  # seconds a question may wait for the engine's next tick


def run(
    spec: Mapping | LoadSpec,
    *,
    max_duration: float | None = None,
    on_progress: ProgressCallback | None = None,
    stop_event: Any = None,
    registry: Registry | None = None,
) -> LoadResult:
    """Run `spec` to its end on a new event loop; blocks (call from a thread)."""
    load = as_spec(spec)
    if registry is None:
        registry = load.new_registry()
    with active_run() as flag:
        stop = either(flag, stop_event)
        if load.engine == "k6":
            from chaospika.loadengine.k6 import run_k6  # only k6 runs need it

            return run_k6(
                load,
                max_duration=max_duration,
                on_progress=on_progress,
                stop_event=stop,
                registry=registry,
            )
        if load.processes > 1:
            return run_processes(load, registry, max_duration, on_progress, stop)
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(run_here(load, registry, max_duration, on_progress, stop))


async def run_async(
    spec: Mapping | LoadSpec,
    *,
    max_duration: float | None = None,
    on_progress: ProgressCallback | None = None,
    stop_event: Any = None,
    registry: Registry | None = None,
) -> LoadResult:
    """Run `spec` on the running loop (workers or k6: awaited in a thread)."""
    load = as_spec(spec)
    if registry is None:
        registry = load.new_registry()
    if load.engine == "k6" or load.processes > 1:
        return await asyncio.to_thread(
            run,
            load,
            max_duration=max_duration,
            on_progress=on_progress,
            stop_event=stop_event,
            registry=registry,
        )
    with active_run() as flag:
        stop = either(flag, stop_event)
        return await run_here(load, registry, max_duration, on_progress, stop)


class _Either:
    """Set when any of its flags is set (`stop_all()` or the caller's stop_event)."""

    def __init__(self, *flags: Any) -> None:
        self.flags = flags

    def is_set(self) -> bool:
        return any(flag.is_set() for flag in self.flags)


def either(flag: StopFlag, stop_event: Any) -> Any:
    """The stop condition of a run: its lifecycle flag or the caller's event."""
    return flag if stop_event is None else _Either(flag, stop_event)


class LoadRun:
    """One run of a spec as a handle: start, stop, read while it runs.

    `ask(question)` calls `question(self)` (read `self.registry`) on the
    engine's loop at its next one-second tick, so nothing reads the registry
    while the engine writes it; once the run has ended, at once. k6 runs feed
    the registry about once a second, so live answers are up to ~2 s behind.
    """

    def __init__(
        self,
        spec: Mapping | LoadSpec,
        *,
        max_duration: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_end: Callable[["LoadRun"], None] | None = None,
        name: str = "load",
    ) -> None:
        self.spec = as_spec(spec)
        self.registry = self.spec.new_registry()
        self.name = name
        self.max_duration = max_duration
        self.on_progress = on_progress
        self.on_end = on_end  # called with the handle once the run has ended
        self.stop_event = StopFlag()  # lock-free: `stop` is safe in a signal handler
        self.done = threading.Event()
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self.progress: dict = {}
        self.live_captures: dict = {}  # {scenario: {key: values}} at the last tick
        self._questions: queue.SimpleQueue = queue.SimpleQueue()

    # -- running --------------------------------------------------------------
    def run(self) -> LoadResult:
        """Run to the end on the calling thread and return the result."""
        try:
            self.result = run(
                self.spec,
                max_duration=self.max_duration,
                on_progress=self._on_progress,
                stop_event=self.stop_event,
                registry=self.registry,
            )
            return self.result
        except BaseException as error:
            self.error = error
            raise
        finally:
            self._answer_pending()
            self.done.set()
            if self.on_end is not None:
                self.on_end(self)

    def start(self) -> threading.Thread:
        """Run on a daemon thread (errors are logged); `wait` or `stop` end it."""
        thread = threading.Thread(
            target=self._run_logged, name=f"pika-load-{self.name}", daemon=True
        )
        thread.start()
        return thread

    def _run_logged(self) -> None:
        try:
            self.run()
        except Exception:
            logger.exception("load '%s' failed", self.name)

    def request_stop(self) -> None:
        """Ask the run to stop; no lock, no wait: safe in a signal handler."""
        self.stop_event.set()

    def stop(self, timeout: float = 60.0) -> LoadResult | None:
        """Ask the run to stop, wait up to `timeout` s; its result (None: not yet)."""
        self.request_stop()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> LoadResult | None:
        """Wait until the run has ended; its result (None if it failed)."""
        self.done.wait(timeout)
        return self.result

    # -- live questions -------------------------------------------------------
    def ask(self, question: Callable[["LoadRun"], Any]) -> Any:
        """Evaluate `question(self)` safely: on the engine's loop while it runs."""
        if self.done.is_set():
            return question(self)
        answer: Future = Future()
        self._questions.put((question, answer))
        if self.done.is_set():  # ended meanwhile: no tick will come
            self._answer_pending()
        return answer.result(timeout=ANSWER_TIMEOUT_S + 1.5)

    def thresholds(self) -> dict:
        """Threshold verdicts now (live) or at the end: {metric: {expression: ok}}."""
        if self.result is not None:
            return self.result.thresholds
        return self.ask(lambda run: run.spec.thresholds.final(run.registry))

    def _answer_pending(self) -> None:
        while True:
            try:
                question, answer = self._questions.get_nowait()
            except queue.Empty:
                return
            try:
                answer.set_result(question(self))
            except Exception as error:  # noqa: BLE001 - handed to the asker
                answer.set_exception(error)

    def _on_progress(self, progress: dict) -> None:
        self.live_captures = progress.pop("captures", None) or {}
        self.progress = progress
        self._answer_pending()
        if self.on_progress is not None:
            self.on_progress(progress)
