"""Run a load spec: its scenarios on one event loop, or spread over worker processes.

`run(spec)` is the blocking entry point (its own event loop, uvloop when
installed); `run_async(spec)` runs on the caller's loop. Every run is bounded:
by its scenarios' durations plus gracefulStop, by `max_duration`, and by
`stop_event` (anything with `is_set()`, checked every 20 ms). Every 50 ms the
recorded values are folded into the metrics in short slices, so that no single
fold holds the event loop for long. Once a second the
runner records the vus/vus_max gauges, ticks the registry, evaluates
abortOnFail thresholds and reports progress. With `processes: N`, N spawned
workers each run a stripe of every scenario and send their metrics as deltas
once a second; the parent merges them into one registry. Workers are spawned,
so a script calling `run()` needs the usual `if __name__ == "__main__":` guard,
and `exec` modules must be importable in a fresh interpreter.
"""

import asyncio
import logging
import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for_messages
from typing import Any

from chaospika.load import summary
from chaospika.load.errors import ScenarioError
from chaospika.load.executors import ExecutionState, Outcome, Segment
from chaospika.load.executors.base import WHOLE
from chaospika.load.metrics import FOLD_SLICE, Registry
from chaospika.load.progress import (
    LAG_LIMIT_MS,
    LagMonitor,
    ProgressMeter,
    Totals,
    lag_warning,
)
from chaospika.load.scenario import LoadSpec, Scenario, parse_spec
from chaospika.load.thresholds import thresholds_passed
from chaospika.load.vu import capture_warnings, merge_captures

__all__ = ["LoadResult", "run", "run_async"]

logger = logging.getLogger("chaostoolkit")

END_MARGIN = 5.0  # seconds past the longest planned end before a forced stop
STOP_POLL = 0.02  # seconds between two looks at the stop event and the deadline
FOLD_PERIOD = 0.05  # seconds between two rounds of metric folding
FOLD_ROUND = 64  # slices one round folds at most (each FOLD_SLICE values)
WORKER_START_TIMEOUT = 60.0  # seconds for worker processes to import and parse
WORKER_EXIT_TIMEOUT = 10.0  # seconds for workers to report after a stop
REPORT_WAIT = 0.5  # seconds the parent waits for the workers' report of a second

ProgressCallback = Callable[[dict], None]


@dataclass
class LoadResult:
    """What a run measured; fields also readable as `result["warnings"]`."""

    registry: Registry
    thresholds: dict
    thresholds_passed: bool
    aborted: bool
    captures: dict
    duration_s: float
    summary_text: str = ""
    summary_export: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    scenarios: dict = field(default_factory=dict)
    stopped_by: str | None = None  # "threshold", "stop_event" or "max_duration"

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def to_dict(self) -> dict:
        """JSON-friendly copy without the registry."""
        return {
            "thresholds": self.thresholds,
            "thresholds_passed": self.thresholds_passed,
            "aborted": self.aborted,
            "captures": self.captures,
            "duration_s": self.duration_s,
            "summary_text": self.summary_text,
            "summary_export": self.summary_export,
            "warnings": list(self.warnings),
            "scenarios": self.scenarios,
            "stopped_by": self.stopped_by,
        }


# -- entry points ----------------------------------------------------------------


def run(
    spec: Mapping | LoadSpec,
    *,
    max_duration: float | None = None,
    on_progress: ProgressCallback | None = None,
    stop_event: Any = None,
) -> LoadResult:
    """Run `spec` to its end on a new event loop; blocks (call from a thread)."""
    load = _fresh(spec)
    if load.processes > 1:
        return _run_processes(load, max_duration, on_progress, stop_event)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_run_here(load, max_duration, on_progress, stop_event))


async def run_async(
    spec: Mapping | LoadSpec,
    *,
    max_duration: float | None = None,
    on_progress: ProgressCallback | None = None,
    stop_event: Any = None,
) -> LoadResult:
    """Run `spec` on the running loop (processes > 1: workers, awaited in a thread)."""
    load = _fresh(spec)
    if load.processes > 1:
        return await asyncio.to_thread(
            _run_processes, load, max_duration, on_progress, stop_event
        )
    return await _run_here(load, max_duration, on_progress, stop_event)


def _fresh(spec: Mapping | LoadSpec) -> LoadSpec:
    """A LoadSpec whose registry has not been used by a previous run."""
    if not isinstance(spec, LoadSpec) or spec.used:
        spec = parse_spec(spec.raw if isinstance(spec, LoadSpec) else spec)
    spec.used = True
    return spec


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is an optional extra
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _deadline(load: LoadSpec, max_duration: float | None) -> float:
    """Seconds after the start at which the run is stopped whatever happens."""
    limit = load.max_duration() + END_MARGIN
    if max_duration is None:
        return limit
    if isinstance(max_duration, bool) or not isinstance(max_duration, (int, float)):
        raise ScenarioError("max_duration", f"expected seconds, got {max_duration!r}")
    if not max_duration > 0:
        raise ScenarioError("max_duration", f"must be > 0, got {max_duration!r}")
    return min(limit, float(max_duration))


# -- one process -------------------------------------------------------------------


class LocalRun:
    """This process's stripe of every scenario, on the running event loop."""

    def __init__(
        self,
        load: LoadSpec,
        segment: Segment = WHOLE,
        deadline: float = float("inf"),
        external_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.load = load
        self.registry = load.registry
        self.segment = segment
        self.deadline = deadline
        self.external_stop = external_stop
        self.state = ExecutionState(max_vus=planned_vus(load, segment))
        self.captures: dict[str, dict[str, list]] = {
            name: {} for name in load.scenarios
        }
        self.outcomes = {
            name: Outcome(name, scenario.config.executor)
            for name, scenario in load.scenarios.items()
        }
        self.lag = LagMonitor()
        self.stopped_by: str | None = None
        self.duration = 0.0
        self.t0 = 0.0
        self._stop = asyncio.Event()
        self._vus_made = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def stop_now(self, reason: str) -> None:
        """Interrupt every scenario now (k6's abort)."""
        if self.stopped_by is None:
            self.stopped_by = reason
        self._stop.set()

    def record_gauges(self) -> None:
        vus = self.state.active_vus
        self.registry.add("vus", float(vus))
        self.registry.add("vus_max", float(max(self.state.max_vus, vus)))

    def errors(self) -> int:
        """Iterations that raised so far."""
        return sum(outcome.errors for outcome in self.outcomes.values())

    async def run(self, on_second: Callable[[float], None]) -> None:
        """Run to the end; `on_second(elapsed)` is called once a second."""
        loop = asyncio.get_running_loop()
        self.t0 = time.monotonic()
        scenarios = [
            loop.create_task(self._scenario(scenario))
            for scenario in self.load.scenarios.values()
        ]
        for task in scenarios:
            task.add_done_callback(self._stop_on_error)
        helpers = [
            loop.create_task(self._watch()),
            loop.create_task(self._fold_often()),
            loop.create_task(self._every_second(on_second)),
            loop.create_task(self.lag.run()),
        ]
        try:
            results = await asyncio.gather(*scenarios, return_exceptions=True)
        finally:
            for task in scenarios + helpers:
                task.cancel()
            await asyncio.gather(*scenarios, *helpers, return_exceptions=True)
            self.duration = self.elapsed()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _stop_on_error(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.stop_now("error")

    async def _scenario(self, scenario: Scenario) -> None:
        config = scenario.config
        if config.start_time > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), config.start_time)
                return  # stopped before it started
            except TimeoutError:
                pass
        executor = scenario.executor(
            config,
            make_vu=self._vu_maker(scenario),
            iteration_fn=scenario.iteration,
            registry=self.registry,
            stop=self._stop,
            state=self.state,
            segment=self.segment,
            test_start=self.t0,
        )
        self.outcomes[config.name] = executor.outcome
        await executor.run()

    def _vu_maker(self, scenario: Scenario) -> Callable[[], Any]:
        from chaospika.load.vu import VU

        name = scenario.name
        captures = self.captures[name]
        tags = dict(scenario.config.tags)
        registry, segment = self.registry, self.segment
        redirects = self.load.max_redirects

        def make_vu() -> Any:
            self._vus_made += 1
            number = (self._vus_made - 1) * segment.count + segment.index + 1
            return VU(number, name, registry, captures, tags, max_redirects=redirects)

        return make_vu

    async def _watch(self) -> None:
        while not self._stop.is_set():
            if self.external_stop is not None and self.external_stop():
                self.stop_now("stop_event")
            elif self.elapsed() >= self.deadline:
                self.stop_now("max_duration")
            await asyncio.sleep(STOP_POLL)

    async def _fold_often(self) -> None:
        while True:
            await asyncio.sleep(FOLD_PERIOD)
            await self._fold_pending()

    async def _fold_pending(self) -> None:
        """Fold the recorded values in slices, yielding to the loop between them."""
        for _ in range(FOLD_ROUND):
            if self.registry.fold_some() < FOLD_SLICE:
                return
            await asyncio.sleep(0)

    async def _every_second(self, on_second: Callable[[float], None]) -> None:
        second = 0
        while True:
            second = max(second + 1, int(self.elapsed()))
            while (delay := self.t0 + second - time.monotonic()) > 0:
                await asyncio.sleep(delay)  # timers may fire early: sleep again
            await self._fold_pending()  # the tick then folds what is left: little
            self.lag.close_second()
            try:
                on_second(self.elapsed())
            except Exception:  # a progress callback must not end the test
                logger.exception("load progress callback failed")


def planned_vus(load: LoadSpec, segment: Segment = WHOLE) -> int:
    """k6's vus_max at the start: the most VUs the scenarios plan at one time."""
    changes: list[tuple[float, int]] = []
    for scenario in load.scenarios.values():
        config = scenario.config
        steps = scenario.executor.requirements(
            config.options, config.graceful_stop, segment
        )
        previous = 0
        for offset, vus in steps:
            changes.append((config.start_time + offset, vus - previous))
            previous = vus
    most = current = 0
    for _, change in sorted(changes, key=lambda item: (item[0], item[1])):
        current += change
        most = max(most, current)
    return most


def _lag_warnings(worst_p95_ms: float) -> list[str]:
    return [lag_warning(worst_p95_ms)] if worst_p95_ms > LAG_LIMIT_MS else []


def _request_totals(registry: Any) -> tuple[int, int]:
    """(requests, failed requests) recorded so far."""
    requests = registry.stats("http_reqs")["count"]
    failed = registry.stats("http_req_failed")["passes"]
    return int(requests), int(failed)


def _totals(
    registry: Any, vus: int, vus_max: int, errors: int, lag: float = 0.0
) -> Totals:
    requests, failed = _request_totals(registry)
    return Totals(
        vus=vus,
        vus_max=vus_max,
        iterations=int(registry.stats("iterations")["count"]),
        dropped=int(registry.stats("dropped_iterations")["count"]),
        http_reqs=requests,
        errors=failed + errors,
        lag_p95_ms=lag,
    )


async def _run_here(
    load: LoadSpec,
    max_duration: float | None,
    on_progress: ProgressCallback | None,
    stop_event: Any,
) -> LoadResult:
    local = LocalRun(
        load,
        deadline=_deadline(load, max_duration),
        external_stop=stop_event.is_set if stop_event is not None else None,
    )
    meter = ProgressMeter()
    registry = load.registry

    def on_second(elapsed: float) -> None:
        local.record_gauges()
        registry.tick(elapsed)
        hit = load.thresholds.check_abort(registry, elapsed)
        if hit is not None:
            logger.warning(
                "load aborted: threshold %s: %s crossed", hit.metric, hit.source
            )
            local.stop_now("threshold")
        if on_progress is not None:
            state = local.state
            vus_max = max(state.max_vus, state.active_vus)
            lag = local.lag.p95_ms()
            totals = _totals(registry, state.active_vus, vus_max, local.errors(), lag)
            totals.lag_sustained_ms = local.lag.sustained_p95_ms
            on_progress(meter.report(elapsed, totals))

    local.record_gauges()
    await local.run(on_second)
    local.lag.close_second()
    local.record_gauges()
    registry.tick(local.duration)
    outcomes = {name: outcome.to_dict() for name, outcome in local.outcomes.items()}
    return _result(
        load,
        local.duration,
        local.captures,
        outcomes,
        local.stopped_by,
        _lag_warnings(local.lag.worst_p95_ms),
    )


def _result(
    load: LoadSpec,
    duration: float,
    captures: dict,
    outcomes: dict,
    stopped_by: str | None,
    warnings: list[str],
) -> LoadResult:
    registry = load.registry
    thresholds = load.thresholds.final(registry, duration)
    if stopped_by == "max_duration":
        warnings.append(
            f"load stopped after {duration:.1f} s by its time limit (max_duration)"
        )
    info = _scenarios_info(load, outcomes)
    warnings.extend(_dropped_warnings(info))
    warnings.extend(capture_warnings(captures))
    header = {
        "scenarios": {name: data["description"] for name, data in info.items()},
        "max_vus": planned_vus(load),
        "max_duration_s": load.max_duration(),
    }
    stats = load.summary_trend_stats
    return LoadResult(
        registry=registry,
        thresholds=thresholds,
        thresholds_passed=thresholds_passed(thresholds),
        aborted=stopped_by == "threshold",
        captures=captures,
        duration_s=round(duration, 3),
        summary_text=summary.text(
            registry, thresholds, duration, header, trend_stats=stats
        ),
        summary_export=summary.export(
            registry, thresholds, duration, trend_stats=stats
        ),
        warnings=warnings,
        scenarios=info,
        stopped_by=stopped_by,
    )


def _dropped_warnings(info: dict) -> list[str]:
    warnings = []
    for name, data in info.items():
        if not data["dropped"]:
            continue
        why = (
            "no free VU when they were due: raise preAllocatedVUs/maxVUs"
            if "arrival-rate" in data["executor"]
            else "not started before maxDuration"
        )
        warnings.append(
            f"scenario {name}: {data['dropped']} iterations dropped ({why})"
        )
    return warnings


def _scenarios_info(load: LoadSpec, outcomes: dict) -> dict:
    info = {}
    for name, scenario in load.scenarios.items():
        config = scenario.config
        info[name] = {
            "executor": config.executor,
            "description": scenario.describe(),
            "start_time": config.start_time,
            "graceful_stop": config.graceful_stop,
            "max_duration": scenario.max_duration(),
            "tags": dict(config.tags),
            **{k: v for k, v in outcomes[name].items() if k != "scenario"},
        }
    return info


# -- several processes -------------------------------------------------------------


def _run_processes(
    load: LoadSpec,
    max_duration: float | None,
    on_progress: ProgressCallback | None,
    stop_event: Any,
) -> LoadResult:
    """Spawn `load.processes` workers, merge their metrics, return one result."""
    return _Coordinator(
        load, _deadline(load, max_duration), on_progress, stop_event
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
        deadline: float,
        on_progress: ProgressCallback | None,
        stop_event: Any,
    ) -> None:
        self.load = load
        self.registry = load.registry
        self.deadline = deadline
        self.on_progress = on_progress
        self.stop_event = stop_event
        self.context = multiprocessing.get_context("spawn")
        self.stop = self.context.Event()
        self.go = self.context.Event()
        self.workers: list[_Worker] = []
        self.meter = ProgressMeter()
        self.stopped_by: str | None = None
        self.failure: str | None = None
        self.planned = planned_vus(load)

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
                kwargs={"deadline": self.deadline},
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
        if self.load.thresholds.check_abort(self.registry, elapsed) is not None:
            self._halt("threshold")
        if self.on_progress is not None:
            requests, failed = _request_totals(self.registry)
            totals.iterations = int(self.registry.stats("iterations")["count"])
            totals.dropped = int(self.registry.stats("dropped_iterations")["count"])
            totals.http_reqs = requests
            totals.errors += failed
            try:
                self.on_progress(self.meter.report(elapsed, totals))
            except Exception:  # a progress callback must not end the test
                logger.exception("load progress callback failed")

    def _sum_totals(self) -> Totals:
        totals = Totals()
        for worker in self.workers:
            totals.add(worker.totals)
        totals.errors = sum(worker.errors for worker in self.workers)
        return totals

    def _messages(self, timeout: float) -> list:
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
            _, _, worker.seconds, worker.totals, worker.errors, delta = message
            self.registry.merge(delta)
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
        totals = self._sum_totals()
        self.registry.add("vus", float(totals.vus))
        self.registry.add("vus_max", float(max(totals.vus_max, self.planned)))
        self.registry.tick(duration)
        return _result(
            self.load,
            duration,
            captures,
            {name: outcome.to_dict() for name, outcome in outcomes.items()},
            self.stopped_by,
            _lag_warnings(worst_lag),
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
) -> None:
    """Entry point of one worker process: run stripe `index` of `count`."""
    try:
        load = parse_spec(raw)
        sender.send(("ready", index))
        if not go.wait(WORKER_START_TIMEOUT + WORKER_EXIT_TIMEOUT) or stop.is_set():
            sender.send(("done", index, _empty_final(load)))
            return
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            segment = Segment(index, count)
            final = runner.run(_work(load, segment, sender, stop, deadline))
        sender.send(("done", index, final))
    except BaseException:  # noqa: BLE001 - the parent reports it
        sender.send(("error", index, traceback.format_exc()))
    finally:
        sender.close()


def _empty_final(load: LoadSpec) -> dict:
    return {
        "delta": load.registry.snapshot(reset=True),
        "totals": Totals(),
        "errors": 0,
        "captures": {},
        "outcomes": {},
        "worst_lag_ms": 0.0,
    }


async def _work(
    load: LoadSpec, segment: Segment, sender: Any, stop: Any, deadline: float
) -> dict:
    local = LocalRun(load, segment, deadline, external_stop=stop.is_set)
    registry = load.registry

    def totals() -> Totals:
        state = local.state
        return Totals(
            vus=state.active_vus,
            vus_max=max(state.max_vus, state.active_vus),
            lag_p95_ms=local.lag.p95_ms(),
            lag_sustained_ms=local.lag.sustained_p95_ms,
        )

    def on_second(elapsed: float) -> None:
        delta = registry.snapshot(reset=True)
        second = round(elapsed)
        sender.send(("second", segment.index, second, totals(), local.errors(), delta))

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
