"""constant-arrival-rate: `rate` iterations per `timeUnit`, for a duration (open)."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.executors.arrival import ArrivalRateExecutor
from chaospika.loadengine.executors.base import ScenarioConfig, Segment, Steps
from chaospika.loadengine.executors.options import MIN_DURATION
from chaospika.loadengine.summary import go_duration
from chaospika.loadengine.validate import option_duration, option_int

__all__ = [
    "ConstantArrivalRate",
    "ConstantArrivalRateOptions",
    "parse_vu_limits",
    "vus_range",
]


@dataclass(frozen=True)
class ConstantArrivalRateOptions:
    rate: int
    time_unit: float
    duration: float
    pre_allocated_vus: int
    max_vus: int


def parse_vu_limits(field: str, raw: dict[str, Any]) -> tuple:
    """Return (preAllocatedVUs, maxVUs); maxVUs defaults to preAllocatedVUs."""
    pre = option_int(field, raw, "preAllocatedVUs", minimum=0)
    most = option_int(field, raw, "maxVUs", default=pre, minimum=0)
    if most < pre:
        raise ScenarioError(
            f"{field}.maxVUs",
            f"maxVUs ({most}) can't be less than preAllocatedVUs ({pre})",
        )
    return pre, most


def vus_range(options: Any) -> str:
    """k6's "maxVUs: 10-50" fact."""
    text = f"maxVUs: {options.pre_allocated_vus}"
    if options.max_vus > options.pre_allocated_vus:
        text += f"-{options.max_vus}"
    return text


class ConstantArrivalRate(ArrivalRateExecutor):
    """Iteration n starts at n * timeUnit / rate, whatever the system's latency."""

    kind = "constant-arrival-rate"
    option_keys = frozenset(
        {"rate", "timeUnit", "duration", "preAllocatedVUs", "maxVUs"}
    )

    @classmethod
    def parse_options(
        cls, field: str, raw: dict[str, Any]
    ) -> ConstantArrivalRateOptions:
        rate = option_int(field, raw, "rate", minimum=1)
        time_unit = option_duration(field, raw, "timeUnit", default=1.0, positive=True)
        duration = option_duration(field, raw, "duration", minimum=MIN_DURATION)
        pre, most = parse_vu_limits(field, raw)
        return ConstantArrivalRateOptions(rate, time_unit, duration, pre, most)

    @classmethod
    def regular_duration(cls, options: ConstantArrivalRateOptions) -> float:
        return options.duration

    @classmethod
    def requirements(
        cls, options: ConstantArrivalRateOptions, graceful_stop: float, segment: Segment
    ) -> Steps:
        end = options.duration + graceful_stop
        return [(0.0, segment.share(options.pre_allocated_vus)), (end, 0)]

    @classmethod
    def describe(cls, config: ScenarioConfig) -> str:
        options = config.options
        per_second = options.rate / options.time_unit
        return (
            f"{per_second:.2f} iterations/s for {go_duration(options.duration)}"
            + cls._base_info(config, vus_range(options))
        )

    def _arrivals(self) -> Iterator[float]:
        options = self.options
        working = self.segment.among(options.max_vus)
        if working is None:
            return
        period = options.time_unit / options.rate
        number, step = working.index, working.count
        while number * period <= options.duration + 1e-9:  # k6: one more at t=duration
            yield number * period
            number += step
