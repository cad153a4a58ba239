"""ramping-arrival-rate: the iteration start rate follows stages (open model).

The rate ramps linearly inside a stage; iteration n (1-based) starts when the
area under the rate curve reaches n, as k6's cal() computes it.
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chaospika.loadengine.executors.arrival import ArrivalRateExecutor
from chaospika.loadengine.executors.base import (
    WHOLE,
    ScenarioConfig,
    Segment,
    Steps,
)
from chaospika.loadengine.executors.constant_arrival_rate import (
    parse_vu_limits,
    vus_range,
)
from chaospika.loadengine.executors.options import Stage, option_stages, stages_end
from chaospika.loadengine.summary import go_duration
from chaospika.loadengine.validate import option_duration, option_int

__all__ = ["RampingArrivalRate", "RampingArrivalRateOptions", "arrival_offsets"]


@dataclass(frozen=True)
class RampingArrivalRateOptions:
    start_rate: int
    time_unit: float
    stages: list[Stage]
    pre_allocated_vus: int
    max_vus: int


def arrival_offsets(
    start_rate: float,
    time_unit: float,
    stages: Sequence[Stage],
    segment: Segment = WHOLE,
) -> Iterator[float]:
    """Start offsets (s) of iterations segment.index+1, +count, ... of the ramp."""
    number = float(segment.index + 1)  # the area to reach: iterations count from 1
    done = end_count = stage_start = 0.0
    rate_from = start_rate / time_unit
    for stage in stages:
        rate_to = stage.target / time_unit
        duration = stage.duration
        if rate_from != rate_to:
            end_count += duration * ((rate_to - rate_from) / 2 + rate_from)
            while number <= end_count:
                root = duration * (
                    rate_from * rate_from * duration
                    + 2 * (number - done) * (rate_to - rate_from)
                )
                offset = (rate_from * duration - math.sqrt(max(root, 0.0))) / (
                    rate_from - rate_to
                )
                yield stage_start + offset
                number += segment.count
        else:
            end_count += duration * rate_to
            while number <= end_count:
                yield stage_start + (number - done) / rate_to
                number += segment.count
        done = end_count
        rate_from = rate_to
        stage_start += duration


class RampingArrivalRate(ArrivalRateExecutor):
    """Start iterations at a rate ramping from `startRate` through `stages`."""

    kind = "ramping-arrival-rate"
    option_keys = frozenset(
        {"startRate", "timeUnit", "stages", "preAllocatedVUs", "maxVUs"}
    )
    wait_regular_end = False  # k6 ends it once the last iteration has started

    @classmethod
    def parse_options(
        cls, field: str, raw: dict[str, Any]
    ) -> RampingArrivalRateOptions:
        start_rate = option_int(field, raw, "startRate", default=0, minimum=0)
        time_unit = option_duration(field, raw, "timeUnit", default=1.0, positive=True)
        stages = option_stages(field, raw)
        pre, most = parse_vu_limits(field, raw)
        return RampingArrivalRateOptions(start_rate, time_unit, stages, pre, most)

    @classmethod
    def regular_duration(cls, options: RampingArrivalRateOptions) -> float:
        return stages_end(options.stages)

    @classmethod
    def requirements(
        cls, options: RampingArrivalRateOptions, graceful_stop: float, segment: Segment
    ) -> Steps:
        end = stages_end(options.stages) + graceful_stop
        return [(0.0, segment.share(options.pre_allocated_vus)), (end, 0)]

    @classmethod
    def describe(cls, config: ScenarioConfig) -> str:
        options = config.options
        most = max([options.start_rate] + [stage.target for stage in options.stages])
        per_second = most / options.time_unit
        return (
            f"Up to {per_second:.2f} iterations/s for "
            f"{go_duration(stages_end(options.stages))} over {len(options.stages)} "
            f"stages" + cls._base_info(config, vus_range(options))
        )

    def _arrivals(self) -> Iterator[float]:
        options = self.options
        working = self.segment.among(options.max_vus)
        if working is None:
            return
        end = stages_end(options.stages)
        for offset in arrival_offsets(
            options.start_rate, options.time_unit, options.stages, working
        ):
            if offset > end + 1e-9:  # k6 starts the one due at exactly the end
                return
            yield offset
