"""Checks of executor options; every failure names the option's dotted path."""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.units import OPTION_NUMBERS, parse_duration

__all__ = [
    "MIN_DURATION",
    "IterationsOptions",
    "Stage",
    "option_duration",
    "option_int",
    "option_iterations",
    "option_stages",
    "reject_unknown",
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


def reject_unknown(field: str, raw: dict, allowed: Iterable[str]) -> None:
    """Raise for the first key of `raw` that is not in `allowed`."""
    allowed = set(allowed)
    for key in raw:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ScenarioError(_path(field, key), f"unknown option (known: {known})")


def _path(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def option_int(
    field: str,
    raw: dict,
    key: str,
    default: int | None = None,
    minimum: int = 0,
) -> int:
    """`raw[key]` as an int >= `minimum`; `default` when absent (None: required)."""
    if key not in raw:
        if default is None:
            raise ScenarioError(_path(field, key), "is required")
        return default
    return _int(_path(field, key), raw[key], minimum)


def _int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(field, f"expected an integer, got {value!r}")
    if isinstance(value, float) and (
        not math.isfinite(value) or not value.is_integer()
    ):
        raise ScenarioError(field, f"expected an integer, got {value!r}")
    if value < minimum:
        raise ScenarioError(field, f"must be >= {minimum}, got {value!r}")
    return int(value)


def option_duration(
    field: str,
    raw: dict,
    key: str,
    default: float | None = None,
    minimum: float = 0.0,
    positive: bool = False,
) -> float:
    """Return `raw[key]` in seconds (k6 duration; a number is milliseconds, as in k6),
    >= `minimum` (> 0 if `positive`)."""
    if key not in raw:
        if default is None:
            raise ScenarioError(_path(field, key), "is required")
        return default
    seconds = parse_duration(
        _path(field, key), raw[key], allow_zero=not positive, per_second=OPTION_NUMBERS
    )
    if seconds < minimum:
        raise ScenarioError(
            _path(field, key), f"must be at least {minimum:g}s, got {raw[key]!r}"
        )
    return seconds


def option_stages(field: str, raw: dict, key: str = "stages") -> list[Stage]:
    """Return the required, non-empty list of {"duration", "target"} stages."""
    if key not in raw:
        raise ScenarioError(_path(field, key), "is required")
    value = raw[key]
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ScenarioError(
            _path(field, key), f"expected a list of stages, got {value!r}"
        )
    if not value:
        raise ScenarioError(_path(field, key), "at least one stage has to be specified")
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
