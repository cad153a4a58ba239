"""ramping-vus: the number of looping VUs follows stages (closed model).

The VU count is a step function (k6's "raw execution steps"): in a stage from
a to b VUs over d seconds, the count changes by one every d/|b-a| seconds, and
reaches b at the stage's end. A VU taken away finishes its iteration
(gracefulRampDown) and is interrupted after that period unless the count
climbs back first (k6's "graceful steps"). At the end all VUs stop starting
iterations and get gracefulStop to finish.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.executors.base import (
    Executor,
    ScenarioConfig,
    Segment,
    Steps,
)
from chaospika.loadengine.executors.options import Stage, option_stages, stages_end
from chaospika.loadengine.summary import go_duration
from chaospika.loadengine.validate import option_duration, option_int

__all__ = ["RampingVUs", "RampingVUsOptions", "graceful_steps", "raw_steps"]


@dataclass(frozen=True)
class RampingVUsOptions:
    start_vus: int
    stages: list[Stage]
    graceful_ramp_down: float


def raw_steps(start_vus: int, stages: Sequence[Stage], zero_end: bool) -> Steps:
    """Planned VUs over time, without graceful ramp-downs (k6's raw steps)."""
    steps: Steps = [(0.0, start_vus)]

    def add(offset: float, vus: int) -> None:
        if steps[-1][1] != vus:
            steps.append((offset, vus))

    stage_end, current = 0.0, start_vus
    for stage in stages:
        stage_end += stage.duration
        diff = stage.target - current
        if diff == 0:
            continue
        if stage.duration == 0:
            add(stage_end, stage.target)
        elif diff > 0:
            for vus in range(current + 1, stage.target + 1):
                add(stage_end - stage.duration * (stage.target - vus) / diff, vus)
        else:
            for vus in range(current, stage.target, -1):
                offset = stage_end - stage.duration * (stage.target - vus + 1) / diff
                add(offset, vus - 1)
        current = stage.target
    if zero_end and steps[-1][1] != 0:
        steps.append((stage_end, 0))
    return steps


def stripe_steps(steps: Steps, segment: Segment) -> Steps:
    """The same steps counting only the VUs of this process's stripe."""
    striped: Steps = []
    for offset, vus in steps:
        mine = segment.share(vus)
        if not striped or striped[-1][1] != mine:
            striped.append((offset, mine))
    return striped


def graceful_steps(raw: Steps, graceful_ramp_down: float, end: float) -> Steps:
    """VUs allowed to exist over time: raw steps kept up for gracefulRampDown.

    `raw` has no final zero; `end` is the stages' end plus gracefulStop, when
    the count drops to 0. Port of k6's reserveVUsForGracefulRampDowns().
    """
    steps: Steps = list(raw)
    if graceful_ramp_down > 0:
        steps = _reserve_ramp_downs(raw, graceful_ramp_down, end)
    if steps[-1][1] != 0:
        steps.append((end, 0))
    return steps


def _reserve_ramp_downs(raw: Steps, grace: float, end: float) -> Steps:
    steps: Steps = []
    last_vus = 0
    last_down = 0
    number = 0
    while number < len(raw):
        offset, vus = raw[number]
        if number == 0 or vus > last_vus:
            steps.append((offset, vus))
            last_vus = vus
            number += 1
            continue
        if vus == last_vus:
            number += 1
            continue
        timeout = offset + grace
        skipped = False
        ramping_down = True
        for ahead in range(max(last_down, number + 1), len(raw)):
            ahead_offset, ahead_vus = raw[ahead]
            if ahead_offset > timeout:
                break
            if ahead_vus >= last_vus:
                number = ahead
                skipped = True
                break
            if ramping_down:
                if raw[ahead - 1][1] > ahead_vus:
                    last_down = ahead
                else:
                    ramping_down = False
        if skipped:
            continue
        if timeout >= end:
            break
        steps.append((timeout, vus))
        last_vus = vus
        number += 1
    return steps


class _LoopingVU:
    """One VU slot: started, gracefully stopped, hard stopped as the steps say."""

    def __init__(self, executor: "RampingVUs") -> None:
        self.executor = executor
        self.vu: Any | None = None
        self.task: asyncio.Task | None = None
        self.wanted = False

    def start(self) -> None:
        self.wanted = True
        if self.task is None:
            if self.vu is None:
                self.vu = self.executor._new_vu()
            self.task = self.executor._spawn(self._run())

    def graceful_stop(self) -> None:
        self.wanted = False

    def hard_stop(self) -> None:
        self.wanted = False
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        me = asyncio.current_task()
        try:
            await self.executor._loop(self.vu, self._wanted)
        finally:
            if self.task is me:
                self.task = None

    def _wanted(self) -> bool:
        return self.wanted


class RampingVUs(Executor):
    """Loop iterations on a number of VUs that follows `stages`."""

    kind = "ramping-vus"
    option_keys = frozenset({"startVUs", "stages", "gracefulRampDown"})

    @classmethod
    def parse_options(cls, field: str, raw: dict[str, Any]) -> RampingVUsOptions:
        start_vus = option_int(field, raw, "startVUs", default=1, minimum=0)
        stages = option_stages(field, raw)
        if max([start_vus] + [stage.target for stage in stages]) <= 0:
            raise ScenarioError(
                f"{field}.stages",
                "either startVUs or one of the stages' target values must be > 0",
            )
        grace = option_duration(field, raw, "gracefulRampDown", default=30.0)
        return RampingVUsOptions(start_vus, stages, grace)

    @classmethod
    def regular_duration(cls, options: RampingVUsOptions) -> float:
        return stages_end(options.stages)

    @classmethod
    def requirements(
        cls, options: RampingVUsOptions, graceful_stop: float, segment: Segment
    ) -> Steps:
        raw = stripe_steps(raw_steps(options.start_vus, options.stages, False), segment)
        end = stages_end(options.stages) + graceful_stop
        return graceful_steps(raw, options.graceful_ramp_down, end)

    @classmethod
    def describe(cls, config: ScenarioConfig) -> str:
        options = config.options
        most = max([options.start_vus] + [stage.target for stage in options.stages])
        grace = f"gracefulRampDown: {go_duration(options.graceful_ramp_down)}"
        return (
            f"Up to {most} looping VUs for {go_duration(stages_end(options.stages))} "
            f"over {len(options.stages)} stages" + cls._base_info(config, grace)
        )

    async def _execute(self) -> None:
        options = self.options
        raw = stripe_steps(
            raw_steps(options.start_vus, options.stages, True), self.segment
        )
        allowed = self.requirements(options, self.config.graceful_stop, self.segment)
        slots = [_LoopingVU(self) for _ in range(max(vus for _, vus in allowed))]
        self._running = 0
        self._allowed = 0
        position = 0
        for offset, vus in raw:
            while position < len(allowed) and allowed[position][0] < offset:
                await self._sleep_until(allowed[position][0])
                self._hard_stop_to(slots, allowed[position][1])
                position += 1
            await self._sleep_until(offset)
            self._schedule(slots, vus)
        self._regular_over = True
        rest = self._spawn(self._hard_stops(slots, allowed[position:]))
        loops = [slot.task for slot in slots if slot.task is not None]
        end = stages_end(options.stages) + self.config.graceful_stop
        await self._finish(loops, end)
        rest.cancel()

    def _schedule(self, slots: list[_LoopingVU], vus: int) -> None:
        while self._running < vus:
            slots[self._running].start()
            self._running += 1
        while self._running > vus:
            self._running -= 1
            slots[self._running].graceful_stop()

    def _hard_stop_to(self, slots: list[_LoopingVU], vus: int) -> None:
        while self._allowed > vus:
            self._allowed -= 1
            slots[self._allowed].hard_stop()
        self._allowed = vus

    async def _hard_stops(self, slots: list[_LoopingVU], steps: Steps) -> None:
        for offset, vus in steps:
            await self._sleep_until(offset)
            self._hard_stop_to(slots, vus)
