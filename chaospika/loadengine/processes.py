"""`processes: N`: N spawned workers each run a stripe of every scenario.

Each worker runs `runner.LocalRun` on its own event loop and sends its metrics
as a delta once a second; the parent (`_Coordinator`) merges them into one
registry, ticks it, evaluates abortOnFail thresholds, reports progress and
stops the workers at the deadline. Workers are spawned, so a script calling
`run()` needs the usual `if __name__ == "__main__":` guard, and `exec`
modules must be importable in a fresh interpreter. A worker never outlives its
parent: it asks the kernel for SIGKILL at the parent's death (Linux) and a
watchdog thread exits it within PARENT_POLL seconds once its parent is gone.
"""

import asyncio
import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from chaospika.loadengine.executors import Outcome, Segment
from chaospika.loadengine.limits import rss_mb
from chaospika.loadengine.parent_death import death_signal_setter
from chaospika.loadengine.progress import ProgressMeter, Totals
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.runner import (
    STOP_POLL,
    AbortClock,
    LoadResult,
    LocalRun,
    ProgressCallback,
    lag_warnings,
    load_result,
    loop_factory,
    planned_vus,
    run_deadline,
)
from chaospika.loadengine.scenario import LoadSpec, parse_spec
from chaospika.loadengine.vu import merge_captures

__all__ = ["run_processes", "worker_main"]

logger = logging.getLogger("chaostoolkit")

WORKER_START_TIMEOUT = 60.0  # seconds for worker processes to import and parse
WORKER_EXIT_TIMEOUT = 10.0  # seconds for workers to report after a stop
REPORT_WAIT = 0.5  # seconds the parent waits for the workers' report of a second
PARENT_POLL = 0.2  # seconds between two looks of a worker at its parent
EXIT_ORPHANED = 3  # a worker's exit code once its parent has died


def run_processes(
    load: LoadSpec,
    registry: Registry,
    max_duration: float | None,
    on_progress: ProgressCallback | None,
    stop_event: Any,
) -> LoadResult:
    """Spawn `load.processes` workers, merge their metrics into `registry`."""
    return _Coordinator(
        load, registry, run_deadline(load, max_duration), on_progress, stop_event
    ).run()


@dataclass
class _Worker:
    index: int
    process: Any
    connection: Any
    totals: Totals = field(default_factory=Totals)
    seconds: int = 0  # seconds reported so far
    errors: int = 0
    done: bool = False
    final: dict | None = None


class _Coordinator:
    """The parent of the workers: start, merge once a second, stop, collect."""

    def __init__(
        self,
        load: LoadSpec,
        registry: Registry,
        deadline: float,
        on_progress: ProgressCallback | None,
        stop_event: Any,
    ) -> None:
        self.load = load
        self.registry = registry
        self.deadline = deadline
        self.on_progress = on_progress
        self.stop_event = stop_event
        import multiprocessing  # here: a run in one process never needs it

        self.context = multiprocessing.get_context("spawn")
        self.stop = self.context.Event()
        self.go = self.context.Event()
        self.workers: list[_Worker] = []
        self.meter = ProgressMeter()
        self.stopped_by: str | None = None
        self.failure: str | None = None
        self.planned = planned_vus(load)
        self.abort_clock = AbortClock()
        self.live_captures: dict[str, dict[str, list]] = {
            name: {} for name in load.scenarios
        }  # what the workers reported so far; the result takes their final lists

    def run(self) -> LoadResult:
        duration = 0.0
        try:
            self._start()
            if self.failure is None:
                duration = self._drive()
        finally:
            self._reap()
        if self.failure is not None:
            raise RuntimeError(f"a load worker process failed:\n{self.failure}")
        return self._collect(duration)

    def _start(self) -> None:
        count = self.load.processes
        for index in range(count):
            receiver, sender = self.context.Pipe(duplex=False)
            process = self.context.Process(
                target=worker_main,
                args=(self.load.raw, index, count, sender, self.stop, self.go),
                kwargs={"deadline": self.deadline, "parent": os.getpid()},
                name=f"chaospika-load-{index}",
                daemon=True,
            )
            process.start()
            sender.close()
            self.workers.append(_Worker(index, process, receiver))
        ready: set[int] = set()
        limit = time.monotonic() + WORKER_START_TIMEOUT
        while len(ready) < count and self.failure is None:
            if time.monotonic() > limit:
                raise RuntimeError("load worker processes did not start in time")
            for message in self._messages(0.1):
                if message[0] == "ready":
                    ready.add(message[1])

    def _drive(self) -> float:
        self.go.set()
        t0 = time.monotonic()
        second = 1
        while not all(worker.done for worker in self.workers):
            elapsed = time.monotonic() - t0
            self._messages(STOP_POLL)
            if self.failure is not None:
                self._halt("error")
            elif self.stop_event is not None and self.stop_event.is_set():
                self._halt("stop_event")
            elif elapsed >= self.deadline:
                self._halt("max_duration")
            if elapsed >= self.deadline + WORKER_EXIT_TIMEOUT:
                logger.error("load workers did not finish; terminating them")
                break
            if all(worker.done for worker in self.workers):
                break
            reported = all(w.done or w.seconds >= second for w in self.workers)
            if reported or time.monotonic() >= t0 + second + REPORT_WAIT:
                self._second(time.monotonic() - t0)
                second = max(second + 1, int(time.monotonic() - t0))
        return time.monotonic() - t0

    def _halt(self, reason: str) -> None:
        if self.stopped_by is None:
            self.stopped_by = reason
        self.stop.set()

    def _second(self, elapsed: float) -> None:
        totals = self._sum_totals()
        self.registry.add("vus", float(totals.vus))
        self.registry.add("vus_max", float(max(totals.vus_max, self.planned)))
        self.registry.tick(elapsed)
        judged = self.abort_clock(elapsed)
        hit = (
            self.load.thresholds.check_abort(self.registry, elapsed) if judged else None
        )
        if hit is not None:
            self._halt("threshold")
        self._check_memory()
        if self.on_progress is not None:
            totals.read(self.registry, elapsed)  # the merged counts and p(95)
            totals.errors += totals.http_req_failed
            report = self.meter.report(elapsed, totals)
            try:
                self.on_progress({**report, "captures": self.live_captures})
            except Exception:  # a progress callback must not end the test
                logger.exception("load progress callback failed")

    def _check_memory(self) -> None:
        """Halt once this process and its workers use more than maxMemoryMB."""
        cap = self.load.limits.max_memory_mb
        pids = [None] + [worker.process.pid for worker in self.workers]
        used = sum(rss_mb(pid) or 0.0 for pid in pids)
        if used > cap and self.stopped_by is None:
            logger.error(
                "load stopped: its processes use %.0f MB, above the limit of %d MB "
                '(raise it with "limits": {"maxMemoryMB": N})',
                used,
                cap,
            )
            self._halt("max_memory")

    def _sum_totals(self) -> Totals:
        totals = Totals()
        for worker in self.workers:
            totals.add(worker.totals)
        totals.errors = sum(worker.errors for worker in self.workers)
        return totals

    def _messages(self, timeout: float) -> list:
        from multiprocessing.connection import wait as wait_for_messages

        open_ends = [w.connection for w in self.workers if not w.done]
        received = []
        for connection in wait_for_messages(open_ends, timeout):
            worker = next(w for w in self.workers if w.connection is connection)
            try:
                message = connection.recv()
            except (EOFError, OSError):
                worker.done = True
                if worker.final is None and self.failure is None:
                    self.failure = f"worker {worker.index} exited without a result"
                continue
            received.append(message)
            self._handle(worker, message)
        return received

    def _handle(self, worker: _Worker, message: tuple) -> None:
        kind = message[0]
        if kind == "second":
            _, _, worker.seconds, worker.totals, worker.errors, delta, new = message
            self.registry.merge(delta)
            for scenario, values in new.items():
                merge_captures(self.live_captures[scenario], values, scenario)
        elif kind == "done":
            _, _, final = message
            self.registry.merge(final.pop("delta"))
            worker.final, worker.done = final, True
            worker.totals, worker.errors = final["totals"], final["errors"]
        elif kind == "error":
            worker.done = True
            self.failure = message[2]

    def _reap(self) -> None:
        """Stop the workers; wait for their exit in the background once all reported."""
        self.stop.set()
        self.go.set()
        for worker in self.workers:
            worker.connection.close()
        processes = [worker.process for worker in self.workers]
        if all(worker.final is not None for worker in self.workers):
            threading.Thread(target=_join, args=(processes,), daemon=True).start()
        else:
            _join(processes)

    def _collect(self, duration: float) -> LoadResult:
        captures: dict[str, dict[str, list]] = {
            name: {} for name in self.load.scenarios
        }
        outcomes: dict[str, Outcome] = {}
        worst_lag = 0.0
        for worker in self.workers:
            final = worker.final or {}
            for scenario, values in final.get("captures", {}).items():
                merge_captures(captures[scenario], values, scenario)
            for name, data in final.get("outcomes", {}).items():
                outcome = Outcome(**data)
                if name in outcomes:
                    outcomes[name].merge(outcome)
                else:
                    outcomes[name] = outcome
            worst_lag = max(worst_lag, final.get("worst_lag_ms", 0.0))
        for name, scenario in self.load.scenarios.items():
            outcomes.setdefault(name, Outcome(name, scenario.config.executor))
        self.registry.tick(duration)
        return load_result(
            self.load,
            self.registry,
            duration,
            captures,
            {name: outcome.to_dict() for name, outcome in outcomes.items()},
            self.stopped_by,
            lag_warnings(worst_lag),
        )


def _join(processes: list) -> None:
    """Wait for worker processes to exit; kill the ones that do not."""
    for process in processes:
        process.join(WORKER_EXIT_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join(5)


def worker_main(
    raw: dict,
    index: int,
    count: int,
    sender: Any,
    stop: Any,
    go: Any,
    deadline: float = float("inf"),
    parent: int | None = None,
) -> None:
    """Entry point of one worker process: run stripe `index` of `count`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
    if parent is not None:
        die_with_parent(parent)
    try:
        load = parse_spec(raw)
        registry = load.new_registry()  # its deltas go to the parent's registry
        sender.send(("ready", index))
        if not go.wait(WORKER_START_TIMEOUT + WORKER_EXIT_TIMEOUT) or stop.is_set():
            sender.send(("done", index, _empty_final(registry)))
            return
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            segment = Segment(index, count)
            work = _work(load, registry, segment, sender, stop, deadline)
            final = runner.run(work)
        sender.send(("done", index, final))
    except BaseException:  # noqa: BLE001 - the parent reports it
        sender.send(("error", index, traceback.format_exc()))
    finally:
        sender.close()


def die_with_parent(parent: int) -> None:
    """End this process when `parent` dies, SIGKILL included, within PARENT_POLL s."""
    set_death_signal = death_signal_setter(signal.SIGKILL)
    if set_death_signal is not None:  # without prctl: the watchdog alone
        set_death_signal()
    if os.getppid() != parent:  # died before we asked
        os._exit(EXIT_ORPHANED)
    threading.Thread(
        target=_watch_parent, args=(parent,), name="parent-watchdog", daemon=True
    ).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(EXIT_ORPHANED)  # no one is left to read the results


def _empty_final(registry: Registry) -> dict:
    return {
        "delta": registry.snapshot(reset=True),
        "totals": Totals(),
        "errors": 0,
        "captures": {},
        "outcomes": {},
        "worst_lag_ms": 0.0,
    }


async def _work(
    load: LoadSpec,
    registry: Registry,
    segment: Segment,
    sender: Any,
    stop: Any,
    deadline: float,
) -> dict:
    local = LocalRun(load, registry, segment, deadline, external_stop=stop.is_set)
    sent: dict[tuple[str, str], int] = {}  # capture values already reported

    def new_captures() -> dict:
        new: dict[str, dict[str, list]] = {}
        for scenario, by_name in local.captures.items():
            for name, values in by_name.items():
                done = sent.get((scenario, name), 0)
                if len(values) > done:
                    new.setdefault(scenario, {})[name] = values[done:]
                    sent[(scenario, name)] = len(values)
        return new

    def totals() -> Totals:
        state = local.state
        return Totals(
            vus=state.active_vus,
            vus_max=max(state.max_vus, state.active_vus),
            lag_p95_ms=local.lag.p95_ms(),
            lag_sustained_ms=local.lag.sustained_p95_ms,
            interrupted=local.interrupted(),
        )

    def on_second(elapsed: float) -> None:
        delta = registry.snapshot(reset=True)
        second = round(elapsed)
        errors, captures = local.errors(), new_captures()
        message = ("second", segment.index, second, totals(), errors, delta, captures)
        try:
            sender.send(message)
        except OSError:  # the parent is gone: nobody reads the results
            os._exit(EXIT_ORPHANED)

    await local.run(on_second)
    local.lag.close_second()
    return {
        "delta": registry.snapshot(reset=True),
        "totals": totals(),
        "errors": local.errors(),
        "captures": local.captures,
        "outcomes": {name: o.to_dict() for name, o in local.outcomes.items()},
        "worst_lag_ms": local.lag.worst_p95_ms,
    }
