"""Checks of executor options; every failure names the option's dotted path."""

from collections.abc import Sequence
from dataclasses import dataclass

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.validate import (
    join_path,
    option_duration,
    option_int,
    reject_unknown,
)

__all__ = [
    "MIN_DURATION",
    "IterationsOptions",
    "Stage",
    "option_iterations",
    "option_stages",
    "stages_end",
]

MIN_DURATION = 1.0  # k6's minimum for `duration` and `maxDuration`


@dataclass(frozen=True)
class Stage:
    """One ramp: reach `target` (VUs or iterations per timeUnit) in `duration` s."""

    duration: float
    target: int


@dataclass(frozen=True)
class IterationsOptions:
    """Options of the iteration-count executors (per-vu- and shared-iterations)."""

    vus: int
    iterations: int
    max_duration: float


def option_stages(field: str, raw: dict, key: str = "stages") -> list[Stage]:
    """Return the required, non-empty list of {"duration", "target"} stages."""
    if key not in raw:
        raise ScenarioError(join_path(field, key), "is required")
    value = raw[key]
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ScenarioError(
            join_path(field, key), f"expected a list of stages, got {value!r}"
        )
    if not value:
        raise ScenarioError(
            join_path(field, key), "at least one stage has to be specified"
        )
    stages = []
    for number, stage in enumerate(value):
        where = f"{field}.{key}[{number}]"
        if not isinstance(stage, dict):
            raise ScenarioError(
                where, f"expected {{'duration', 'target'}}, got {stage!r}"
            )
        reject_unknown(where, stage, ("duration", "target"))
        duration = option_duration(where, stage, "duration")
        target = option_int(where, stage, "target")
        stages.append(Stage(duration, target))
    return stages


def stages_end(stages: Sequence[Stage]) -> float:
    """Sum of the stages' durations."""
    return sum(stage.duration for stage in stages)


def option_iterations(field: str, raw: dict) -> IterationsOptions:
    """`vus`, `iterations` and `maxDuration` (k6's defaults: 1, 1, 10m)."""
    return IterationsOptions(
        vus=option_int(field, raw, "vus", default=1, minimum=1),
        iterations=option_int(field, raw, "iterations", default=1, minimum=1),
        max_duration=option_duration(
            field, raw, "maxDuration", default=600.0, minimum=MIN_DURATION
        ),
    )
