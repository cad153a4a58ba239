"""The JSON load spec (k6's options shape) checked and compiled into a `LoadSpec`.

Every bad field raises `ScenarioError` naming its dotted path, e.g.
`scenarios.orders.rate`. Steps are compiled by `steps.compile_steps`, thresholds
parsed by `thresholds.parse_thresholds`. A LoadSpec holds no metrics: each run
records into its own registry, made by `LoadSpec.new_registry()`.
"""

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.executors import EXECUTORS, Executor, ScenarioConfig
from chaospika.loadengine.executors.base import IterationFn
from chaospika.loadengine.http1 import USER_AGENT
from chaospika.loadengine.limits import Limits, check_vus, parse_limits
from chaospika.loadengine.metrics import DEFAULT_TREND_STATS, trend_stat
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.shortcuts import expand
from chaospika.loadengine.template import scenario_env
from chaospika.loadengine.thresholds import ThresholdSet, parse_thresholds
from chaospika.loadengine.validate import (
    option_duration,
    option_int,
    reject_unknown,
    require_bool,
)

__all__ = [
    "LoadSpec",
    "Scenario",
    "as_spec",
    "define_metrics",
    "parse_spec",
]

TOP_LEVEL_KEYS = (
    "scenarios",
    "thresholds",
    "tags",
    "processes",
    "summaryTrendStats",
    "summaryTimeUnit",
    "userAgent",
    "discardResponseBodies",
    "setup",
    "teardown",
    "engine",
    "metrics",
    "maxRedirects",
    "limits",
    "segments",
)
ENGINES = ("pika", "k6")  # "k6": run on the real k6 binary (chaospika.loadengine.k6)
COMMON_KEYS = ("executor", "startTime", "gracefulStop", "tags", "env", "steps", "exec")
MAX_PROCESSES = 256
MAX_SEGMENTS = 64  # "segments": k6 processes of one engine-k6 run (k6/segments.py)
TIME_UNITS = ("s", "ms", "us")  # k6's summaryTimeUnit values

_NAME = re.compile(r"[0-9A-Za-z_-]+")


@dataclass
class Scenario:
    """One checked scenario: its config, executor class and iteration function."""

    config: ScenarioConfig
    executor: type[Executor]
    iteration: IterationFn

    @property
    def name(self) -> str:
        return self.config.name

    def max_duration(self) -> float:
        """Seconds from the test start to this scenario's latest possible end."""
        options, grace = self.config.options, self.config.graceful_stop
        return self.config.start_time + self.executor.max_duration(options, grace)

    def describe(self) -> str:
        """k6's one-line description ("10 looping VUs for 30s (gracefulStop: 30s)")."""
        return self.executor.describe(self.config)


@dataclass
class LoadSpec:
    """A checked load spec, ready to run (as often as wished: each run has its registry)."""

    scenarios: dict[str, Scenario]
    thresholds: ThresholdSet
    metrics: dict[str, tuple[str, bool]] = field(default_factory=dict)  # custom ones
    tags: dict[str, str] = field(default_factory=dict)
    processes: int = 1
    engine: str = "pika"
    summary_trend_stats: list[str] = field(
        default_factory=lambda: list(DEFAULT_TREND_STATS)
    )
    raw: dict[str, Any] = field(default_factory=dict)
    max_redirects: int | None = None  # k6's maxRedirects; None: default 10
    summary_time_unit: str | None = None  # k6's summaryTimeUnit: "s", "ms", "us"
    user_agent: str = USER_AGENT  # k6's userAgent ("": no User-Agent header)
    setup: IterationFn | None = None  # k6's setup(): its captures reach every VU
    teardown: IterationFn | None = None  # k6's teardown(data), after the scenarios
    limits: Limits = field(default_factory=Limits)  # VU, connection, memory caps
    segments: int = 1  # engine k6: k6 processes, one execution segment each
    discard_response_bodies: bool = False  # k6's: bodies read, counted, not kept

    def max_duration(self) -> float:
        """Longest possible run: max over scenarios of startTime + run + gracefulStop."""
        return max(scenario.max_duration() for scenario in self.scenarios.values())

    def new_registry(self) -> Registry:
        """An empty registry for one run: built-in, custom and threshold sub-metrics."""
        registry = Registry()
        for name, (kind, is_time) in self.metrics.items():
            registry.define(name, kind, is_time=is_time)
        for threshold in self.thresholds:  # tracked from the start, in spec order
            registry.metric(threshold.metric, "thresholds")
        return registry


def as_spec(spec: Mapping[str, Any] | LoadSpec) -> LoadSpec:
    """`spec` itself if already checked, else `parse_spec(spec)`."""
    return spec if isinstance(spec, LoadSpec) else parse_spec(spec)


def parse_spec(spec: Mapping[str, Any]) -> LoadSpec:
    """Check `spec` and compile its scenarios (custom metrics: its "metrics")."""
    if not isinstance(spec, Mapping):
        raise ScenarioError(
            "spec", f"expected a JSON object, got {type(spec).__name__}"
        )
    spec = expand(spec)  # k6's top-level vus/duration/iterations/stages
    reject_unknown("", spec, TOP_LEVEL_KEYS)
    registry = Registry()  # for the checks only: a run makes its own
    tags = _tags("tags", spec.get("tags", {}))
    processes = _processes(spec)
    engine = _engine(spec)
    segments = _segments(spec, engine)
    trend_stats = _trend_stats(spec)
    time_unit = spec.get("summaryTimeUnit") or None
    if time_unit is not None and time_unit not in TIME_UNITS:
        raise ScenarioError(
            "summaryTimeUnit",
            f"expected one of {', '.join(TIME_UNITS)}, got {time_unit!r}",
        )
    max_redirects = (
        option_int("", dict(spec), "maxRedirects") if "maxRedirects" in spec else None
    )
    metrics = define_metrics(spec.get("metrics", {}), registry)
    limits = parse_limits(spec.get("limits"))
    user_agent = spec.get("userAgent", USER_AGENT)
    if not isinstance(user_agent, str) or "\r" in user_agent or "\n" in user_agent:
        raise ScenarioError(
            "userAgent", f"expected a one-line string, got {user_agent!r}"
        )
    discard = require_bool(
        "discardResponseBodies", spec.get("discardResponseBodies", False)
    )
    http = _Http(user_agent, discard)
    scenarios = _scenarios(spec, tags, http)
    hooks = {
        key: _iteration(key, key, _hook(key, spec[key]), http)
        for key in ("setup", "teardown")
        if key in spec
    }
    if hooks and processes > 1:
        raise ScenarioError(next(iter(hooks)), "needs processes: 1")
    check_vus(scenarios, limits)
    thresholds = parse_thresholds(spec.get("thresholds", {}), registry)
    return LoadSpec(
        scenarios=scenarios,
        thresholds=thresholds,
        metrics=metrics,
        tags=tags,
        processes=processes,
        engine=engine,
        summary_trend_stats=trend_stats,
        raw=copy.deepcopy(dict(spec)),
        max_redirects=max_redirects,
        limits=limits,
        summary_time_unit=time_unit,
        user_agent=user_agent,
        setup=hooks.get("setup"),
        teardown=hooks.get("teardown"),
        segments=segments,
        discard_response_bodies=discard,
    )


def _hook(key: str, raw: Any) -> dict[str, Any]:
    """A setup/teardown object: {"steps": [...]} or {"exec": "module:function"}."""
    if not isinstance(raw, Mapping):
        raise ScenarioError(key, f"expected {{'steps': [...]}}, got {raw!r}")
    reject_unknown(key, dict(raw), ("steps", "exec"))
    return dict(raw)


def define_metrics(declared: Any, registry: Registry) -> dict[str, tuple[str, bool]]:
    """Define the spec's custom metrics: {"name": "counter"} or {"name": {"type":
    "trend", "isTime": true}}, so thresholds and `exec` functions can use them.

    Returns {name: (kind, is_time)}, what `LoadSpec.new_registry` defines again.
    """
    if not isinstance(declared, Mapping):
        raise ScenarioError("metrics", f"expected an object, got {declared!r}")
    metrics: dict[str, tuple[str, bool]] = {}
    for name, kind in declared.items():
        field = f"metrics.{name}"
        is_time = False
        if isinstance(kind, Mapping):
            reject_unknown(field, kind, ("type", "isTime"))
            is_time = require_bool(f"{field}.isTime", kind.get("isTime", False))
            kind = kind.get("type")
        registry.define(name, kind, is_time=is_time, field="metrics")
        metrics[name] = (kind, is_time)
    return metrics


def _tags(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ScenarioError(where, f"expected an object of string tags, got {value!r}")
    for key, tag in value.items():
        if not isinstance(key, str) or not key:
            raise ScenarioError(
                where, f"tag names must be non-empty strings, got {key!r}"
            )
        if not isinstance(tag, str):
            raise ScenarioError(f"{where}.{key}", f"expected a string, got {tag!r}")
    return dict(value)


def _processes(spec: Mapping[str, Any]) -> int:
    processes = option_int("", dict(spec), "processes", default=1, minimum=1)
    if processes > MAX_PROCESSES:
        raise ScenarioError("processes", f"must be <= {MAX_PROCESSES}, got {processes}")
    return processes


def _engine(spec: Mapping[str, Any]) -> str:
    engine = spec.get("engine", "pika")
    if engine not in ENGINES:
        raise ScenarioError(
            "engine", f"expected one of {', '.join(ENGINES)}, got {engine!r}"
        )
    return engine


def _segments(spec: Mapping[str, Any], engine: str) -> int:
    segments = option_int("", dict(spec), "segments", default=1, minimum=1)
    if segments > MAX_SEGMENTS:
        raise ScenarioError("segments", f"must be <= {MAX_SEGMENTS}, got {segments}")
    if segments > 1 and engine != "k6":
        raise ScenarioError(
            "segments", "needs engine 'k6' (the pika engine scales with 'processes')"
        )
    return segments


def _trend_stats(spec: Mapping[str, Any]) -> list[str]:
    value = spec.get("summaryTrendStats", list(DEFAULT_TREND_STATS))
    if not isinstance(value, list) or not value:
        raise ScenarioError(
            "summaryTrendStats",
            f"expected a non-empty list such as {list(DEFAULT_TREND_STATS)}",
        )
    for number, stat in enumerate(value):
        trend_stat(stat, f"summaryTrendStats[{number}]")
    return list(value)


@dataclass(frozen=True)
class _Http:
    """The spec's HTTP options every request step is compiled with."""

    user_agent: str  # k6's userAgent
    discard_bodies: bool  # k6's discardResponseBodies


def _scenarios(
    spec: Mapping[str, Any], tags: dict[str, str], http: _Http
) -> dict[str, Scenario]:
    raw = spec.get("scenarios")
    if raw is None:
        raise ScenarioError("scenarios", "is required (at least one scenario)")
    if not isinstance(raw, Mapping) or not raw:
        raise ScenarioError(
            "scenarios", f"expected an object of scenarios, got {raw!r}"
        )
    return {name: _scenario(name, options, tags, http) for name, options in raw.items()}


def _scenario(name: Any, raw: Any, tags: dict[str, str], http: _Http) -> Scenario:
    where = f"scenarios.{name}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ScenarioError(
            where, "scenario names may contain only letters, digits, '_' and '-'"
        )
    if not isinstance(raw, Mapping):
        raise ScenarioError(where, f"expected an object, got {raw!r}")
    raw = dict(raw)
    kind = raw.get("executor")
    if kind is None:
        raise ScenarioError(f"{where}.executor", "is required")
    executor = EXECUTORS.get(kind) if isinstance(kind, str) else None
    if executor is None:
        raise ScenarioError(
            f"{where}.executor",
            f"unknown executor {kind!r} (known: {', '.join(EXECUTORS)})",
        )
    reject_unknown(where, raw, (*COMMON_KEYS, *sorted(executor.option_keys)))
    own = {key: value for key, value in raw.items() if key in executor.option_keys}
    config = ScenarioConfig(
        name=name,
        executor=kind,
        options=executor.parse_options(where, own),
        start_time=option_duration(where, raw, "startTime", default=0.0),
        graceful_stop=option_duration(where, raw, "gracefulStop", default=30.0),
        tags={**tags, **_tags(f"{where}.tags", raw.get("tags", {}))},
        exec=raw.get("exec") if isinstance(raw.get("exec"), str) else None,
    )
    env = _tags(f"{where}.env", raw.get("env", {}))  # k6: strings, like tags
    with scenario_env(env):
        iteration = _iteration(where, name, raw, http)
    return Scenario(config, executor, iteration)


def _iteration(where: str, name: str, raw: dict[str, Any], http: _Http) -> IterationFn:
    if ("steps" in raw) == ("exec" in raw):
        raise ScenarioError(
            f"{where}.steps", "give exactly one of 'steps' (a list) or 'exec'"
        )
    from chaospika.loadengine.steps import compile_exec, compile_steps

    if "exec" in raw:
        return compile_exec(f"{where}.exec", raw["exec"])
    steps = raw["steps"]
    if not isinstance(steps, list) or not steps:
        raise ScenarioError(
            f"{where}.steps", f"expected a non-empty list, got {steps!r}"
        )
    return compile_steps(
        f"{where}.steps",
        steps,
        scenario=name,
        user_agent=http.user_agent,
        discard_bodies=http.discard_bodies,
    )
