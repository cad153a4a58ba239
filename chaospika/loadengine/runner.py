"""Run a load spec in this process: its scenarios on the running event loop.

`LocalRun` runs this process's stripe of every scenario and `run_here` the
whole spec (launch.py chooses it, or the worker processes of processes.py,
which use `LocalRun` too). Every run is bounded:
by its scenarios' durations plus gracefulStop, by `max_duration`, and by
`stop_event` (anything with `is_set()`, checked every 20 ms). Every 50 ms the
recorded values are folded into the metrics in short slices, so that no single
fold holds the event loop for long. Once a second the
runner records the vus/vus_max gauges (as k6: only then, so a run shorter than a
second has none, and the last value is the last running count), ticks the
registry and reports progress; every 2 s (k6's period) it evaluates abortOnFail
thresholds.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaospika.loadengine import summary
from chaospika.loadengine.cancel import cancel_all
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.executors import ExecutionState, Outcome, Segment
from chaospika.loadengine.executors.base import WHOLE
from chaospika.loadengine.limits import ConnectionBudget, rss_mb, use_budget
from chaospika.loadengine.progress import (
    LAG_LIMIT_MS,
    LagMonitor,
    ProgressMeter,
    Totals,
    lag_warning,
)
from chaospika.loadengine.registry import FOLD_SLICE, Registry
from chaospika.loadengine.scenario import LoadSpec, Scenario
from chaospika.loadengine.thresholds import thresholds_passed
from chaospika.loadengine.vu import capture_warnings

__all__ = ["AbortClock", "LoadResult", "LocalRun", "run_deadline", "run_here"]

logger = logging.getLogger("chaostoolkit")

END_MARGIN = 5.0  # seconds past the longest planned end before a forced stop
SCENARIO_CLEANUP = 5.0  # seconds a cancelled scenario gets to close its VUs
MEMORY_POLL = 0.25  # seconds between two looks at the generator's memory
STOP_POLL = 0.02  # seconds between two looks at the stop event and the deadline
FOLD_PERIOD = 0.05  # seconds between two rounds of metric folding
FOLD_ROUND = 64  # slices one round folds at most (each FOLD_SLICE values)
ABORT_PERIOD = 2.0  # seconds between two abortOnFail judgements (k6's thresholds tick)
ABORT_SLACK = 0.5  # a tick a little early still counts
HOOK_TIMEOUT = 60.0  # seconds setup or teardown may take (k6's setupTimeout)

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
    stopped_by: str | None = None  # "threshold", "stop_event", "max_duration"...

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


# -- helpers shared with processes.py and k6 ---------------------------------------


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is an optional extra
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_deadline(load: LoadSpec, max_duration: float | None) -> float:
    """Seconds after the start at which the run is stopped whatever happens."""
    hooks = (load.setup is not None) + (load.teardown is not None)
    limit = load.max_duration() + END_MARGIN + hooks * HOOK_TIMEOUT
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
        registry: Registry,
        segment: Segment = WHOLE,
        deadline: float = float("inf"),
        external_stop: Callable[[], bool] | None = None,
        max_memory_mb: float | None = None,
    ) -> None:
        self.load = load
        self.max_memory_mb = max_memory_mb
        limits = load.limits
        self.budget = ConnectionBudget(segment.share(limits.max_connections) or 1)
        self.registry = registry
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
        self.second = 0  # the whole second the clock reached last
        self._stop = asyncio.Event()
        self._vus_made = 0
        self.setup_data: dict = {}  # vars captured by setup: every VU starts with them

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def stop_now(self, reason: str) -> None:
        """Interrupt every scenario now (k6's abort)."""
        if self.stopped_by is None:
            self.stopped_by = reason
        self._stop.set()

    def record_gauges(self) -> int:
        """Record vus and vus_max as of the current whole second; return vus."""
        vus = self.state.vus_at(self.t0 + self.second)
        self.registry.add("vus", float(vus))
        self.registry.add("vus_max", float(max(self.state.max_vus, vus)))
        return vus

    def errors(self) -> int:
        """Iterations that raised so far."""
        return sum(outcome.errors for outcome in self.outcomes.values())

    def interrupted(self) -> int:
        """Iterations cut by a stop so far."""
        return sum(outcome.interrupted for outcome in self.outcomes.values())

    async def _hook(self, name: str, hook: Any, data: dict) -> dict:
        """Run setup or teardown once on its own VU (k6's); its captured vars."""
        from chaospika.loadengine.vu import VU

        vu = VU(
            0,
            name,
            self.registry,
            {},
            {},
            user_agent=self.load.user_agent,
            discard_bodies=self.load.discard_response_bodies,
        )
        vu.vars.update(data)
        try:
            async with asyncio.timeout(HOOK_TIMEOUT):
                await hook(vu)
        finally:
            await vu.close()
        return dict(vu.vars)

    async def run(self, on_second: Callable[[float], None]) -> None:
        """Run to the end; `on_second(elapsed)` is called once a second."""
        loop = asyncio.get_running_loop()
        use_budget(self.budget)  # the tasks created below inherit it
        if self.load.setup is not None:  # before the clock starts, as k6's setup()
            self.setup_data = await self._hook("setup", self.load.setup, {})
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
            if self.load.teardown is not None:
                await self._hook("teardown", self.load.teardown, self.setup_data)
        finally:
            await cancel_all(scenarios + helpers, patience=SCENARIO_CLEANUP)
            use_budget(None)
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
                async with asyncio.timeout(config.start_time):
                    await self._stop.wait()
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
        from chaospika.loadengine.vu import VU

        name = scenario.name
        captures = self.captures[name]
        tags = dict(scenario.config.tags)
        registry, segment = self.registry, self.segment
        redirects, user_agent = self.load.max_redirects, self.load.user_agent
        discard = self.load.discard_response_bodies

        def make_vu() -> Any:
            self._vus_made += 1
            number = (self._vus_made - 1) * segment.count + segment.index + 1
            vu = VU(
                number,
                name,
                registry,
                captures,
                tags,
                max_redirects=redirects,
                user_agent=user_agent,
                discard_bodies=discard,
            )
            vu.vars.update(self.setup_data)  # k6: setup()'s data reaches every VU
            return vu

        return make_vu

    async def _watch(self) -> None:
        next_memory_check = 0.0
        while not self._stop.is_set():
            elapsed = self.elapsed()
            if self.external_stop is not None and self.external_stop():
                self.stop_now("stop_event")
            elif elapsed >= self.deadline:
                self.stop_now("max_duration")
            elif self.max_memory_mb is not None and elapsed >= next_memory_check:
                next_memory_check = elapsed + MEMORY_POLL
                self._check_memory()
            await asyncio.sleep(STOP_POLL)

    def _check_memory(self) -> None:
        used = rss_mb()
        if used is not None and used > self.max_memory_mb:
            logger.error(
                "load stopped: the load generator uses %.0f MB, above the limit of "
                '%g MB (raise it with "limits": {"maxMemoryMB": N})',
                used,
                self.max_memory_mb,
            )
            self.stop_now("max_memory")

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
            self.second = second
            await self._fold_pending()  # the tick then folds what is left: little
            self.lag.close_second()
            try:
                on_second(self.elapsed())
            except Exception:  # a progress callback must not end the test
                logger.exception("load progress callback failed")


class AbortClock:
    """True every ABORT_PERIOD seconds: when k6 judges abortOnFail thresholds."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, elapsed: float) -> bool:
        if elapsed - self.last < ABORT_PERIOD - ABORT_SLACK:
            return False
        self.last = elapsed
        return True


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


def lag_warnings(worst_p95_ms: float) -> list[str]:
    return [lag_warning(worst_p95_ms)] if worst_p95_ms > LAG_LIMIT_MS else []


def progress_totals(
    registry: Any, vus: int, vus_max: int, errors: int, lag: float = 0.0
) -> Totals:
    totals = Totals(vus=vus, vus_max=vus_max, lag_p95_ms=lag)
    totals.read(registry)
    totals.errors = totals.http_req_failed + errors
    return totals


async def run_here(
    load: LoadSpec,
    registry: Registry,
    max_duration: float | None,
    on_progress: ProgressCallback | None,
    stop_event: Any,
) -> LoadResult:
    """Run `load` on the running loop, recording into `registry`."""
    local = LocalRun(
        load,
        registry,
        deadline=run_deadline(load, max_duration),
        external_stop=stop_event.is_set if stop_event is not None else None,
        max_memory_mb=load.limits.max_memory_mb,
    )
    meter = ProgressMeter()
    judged = AbortClock()

    def on_second(elapsed: float) -> None:
        vus = local.record_gauges()
        registry.tick(elapsed)
        hit = (
            load.thresholds.check_abort(registry, elapsed) if judged(elapsed) else None
        )
        if hit is not None:
            logger.warning(
                "load aborted: threshold %s: %s crossed", hit.metric, hit.source
            )
            local.stop_now("threshold")
        if on_progress is not None:
            vus_max = max(local.state.max_vus, vus)
            lag = local.lag.p95_ms()
            totals = progress_totals(registry, vus, vus_max, local.errors(), lag)
            totals.lag_sustained_ms = local.lag.sustained_p95_ms
            totals.interrupted = local.interrupted()
            # captures: live, read inside the callback (the session's `captured`)
            on_progress({**meter.report(elapsed, totals), "captures": local.captures})

    await local.run(on_second)  # like k6: vus/vus_max only at each whole second
    local.lag.close_second()
    registry.tick(local.duration)
    outcomes = {name: outcome.to_dict() for name, outcome in local.outcomes.items()}
    return load_result(
        load,
        registry,
        local.duration,
        local.captures,
        outcomes,
        local.stopped_by,
        lag_warnings(local.lag.worst_p95_ms),
    )


def load_result(
    load: LoadSpec,
    registry: Registry,
    duration: float,
    captures: dict,
    outcomes: dict,
    stopped_by: str | None,
    warnings: list[str],
) -> LoadResult:
    if registry.stats("iterations")["count"]:
        for name in ("data_sent", "data_received"):  # k6 records them per iteration
            if registry.metric(name).empty:
                registry.add(name, 0)
    thresholds = load.thresholds.final(registry, duration)
    if stopped_by == "max_duration":
        warnings.append(
            f"load stopped after {duration:.1f} s by its time limit (max_duration)"
        )
    elif stopped_by == "max_memory":
        warnings.append(
            f"load stopped after {duration:.1f} s: the load generator used more "
            f"than {load.limits.max_memory_mb} MB (limits.maxMemoryMB)"
        )
    info = scenarios_info(load, outcomes)
    warnings.extend(dropped_warnings(info))
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
            registry,
            thresholds,
            duration,
            header,
            trend_stats=stats,
            time_unit=load.summary_time_unit,
        ),
        summary_export=summary.export(
            registry, thresholds, duration, trend_stats=stats
        ),
        warnings=warnings,
        scenarios=info,
        stopped_by=stopped_by,
    )


def dropped_warnings(info: dict) -> list[str]:
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


def scenarios_info(load: LoadSpec, outcomes: dict) -> dict:
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
