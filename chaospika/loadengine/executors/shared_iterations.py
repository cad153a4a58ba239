"""shared-iterations: VUs share a fixed total of iterations, within maxDuration."""

import asyncio
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.executors.iterations import IterationsExecutor
from chaospika.loadengine.executors.options import IterationsOptions

__all__ = ["SharedIterations"]


class SharedIterations(IterationsExecutor):
    """`vus` VUs take iterations from one shared pool of `iterations`."""

    kind = "shared-iterations"
    sharing = "shared among"

    @classmethod
    def parse_options(cls, field: str, raw: dict[str, Any]) -> IterationsOptions:
        options = super().parse_options(field, raw)
        if options.iterations < options.vus:
            raise ScenarioError(
                f"{field}.iterations",
                f"the number of iterations ({options.iterations}) can't be less "
                f"than the number of VUs ({options.vus})",
            )
        return options

    async def _execute(self) -> None:
        options = self.options
        working = self.segment.among(options.vus)
        self._total = working.share(options.iterations) if working else 0
        self._attempted = 0
        vus = [
            self._spawn(self._run_vu(self._new_vu()))
            for _ in range(self.segment.share(options.vus))
        ]
        await self._wait_for(vus, options.max_duration)
        self._regular_over = True
        await self._finish(vus, options.max_duration + self.config.graceful_stop)
        self._drop(self._total - min(self._attempted, self._total))

    async def _run_vu(self, vu: Any) -> None:
        self.state.vu_started()
        try:
            while not self._regular_over:
                self._attempted += 1
                if self._attempted > self._total:
                    return
                await self._iterate(vu)
                await asyncio.sleep(0)
        finally:
            self.state.vu_ended()
