"""constant-vus: a fixed number of VUs loop iterations for a duration (closed model)."""

from dataclasses import dataclass
from typing import Any

from chaospika.loadengine.executors.base import (
    Executor,
    ScenarioConfig,
    Segment,
    Steps,
)
from chaospika.loadengine.executors.options import MIN_DURATION
from chaospika.loadengine.summary import go_duration
from chaospika.loadengine.validate import option_duration, option_int

__all__ = ["ConstantVUs", "ConstantVUsOptions"]


@dataclass(frozen=True)
class ConstantVUsOptions:
    vus: int
    duration: float


class ConstantVUs(Executor):
    """`vus` VUs run iterations back to back for `duration`."""

    kind = "constant-vus"
    option_keys = frozenset({"vus", "duration"})

    @classmethod
    def parse_options(cls, field: str, raw: dict[str, Any]) -> ConstantVUsOptions:
        return ConstantVUsOptions(
            vus=option_int(field, raw, "vus", default=1, minimum=1),
            duration=option_duration(field, raw, "duration", minimum=MIN_DURATION),
        )

    @classmethod
    def regular_duration(cls, options: ConstantVUsOptions) -> float:
        return options.duration

    @classmethod
    def requirements(
        cls, options: ConstantVUsOptions, graceful_stop: float, segment: Segment
    ) -> Steps:
        return [
            (0.0, segment.share(options.vus)),
            (options.duration + graceful_stop, 0),
        ]

    @classmethod
    def describe(cls, config: ScenarioConfig) -> str:
        options = config.options
        return f"{options.vus} looping VUs for {go_duration(options.duration)}" + (
            cls._base_info(config)
        )

    async def _execute(self) -> None:
        options = self.options
        loops = [
            self._spawn(self._loop(self._new_vu(), self._running))
            for _ in range(self.segment.share(options.vus))
        ]
        await self._sleep_until(options.duration)
        self._regular_over = True
        await self._finish(loops, options.duration + self.config.graceful_stop)

    def _running(self) -> bool:
        return not self._regular_over
