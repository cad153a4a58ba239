"""What the two iteration-count executors share: options, VU plan and description."""

from typing import Any

from chaospika.loadengine.executors.base import Executor, ScenarioConfig, Segment, Steps
from chaospika.loadengine.executors.options import IterationsOptions, option_iterations
from chaospika.loadengine.summary import go_duration

__all__ = ["IterationsExecutor"]


class IterationsExecutor(Executor):
    """`vus` VUs run a count of iterations within `maxDuration` (then gracefulStop)."""

    option_keys = frozenset({"vus", "iterations", "maxDuration"})
    sharing = ""  # how the iterations relate to the VUs, for `describe`

    @classmethod
    def parse_options(cls, field: str, raw: dict[str, Any]) -> IterationsOptions:
        return option_iterations(field, raw)

    @classmethod
    def regular_duration(cls, options: IterationsOptions) -> float:
        return options.max_duration

    @classmethod
    def requirements(
        cls, options: IterationsOptions, graceful_stop: float, segment: Segment
    ) -> Steps:
        end = options.max_duration + graceful_stop
        return [(0.0, segment.share(options.vus)), (end, 0)]

    @classmethod
    def describe(cls, config: ScenarioConfig) -> str:
        options = config.options
        return (
            f"{options.iterations} iterations {cls.sharing} {options.vus} VUs"
            + cls._base_info(
                config, f"maxDuration: {go_duration(options.max_duration)}"
            )
        )
