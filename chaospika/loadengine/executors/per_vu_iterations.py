"""per-vu-iterations: each VU runs a fixed number of iterations, within maxDuration."""

import asyncio
from typing import Any

from chaospika.loadengine.executors.iterations import IterationsExecutor

__all__ = ["PerVUIterations"]


class PerVUIterations(IterationsExecutor):
    """Each of `vus` VUs runs `iterations` iterations; unstarted ones are dropped."""

    kind = "per-vu-iterations"
    sharing = "for each of"

    async def _execute(self) -> None:
        options = self.options
        vus = [
            self._spawn(self._run_vu(self._new_vu(), options.iterations))
            for _ in range(self.segment.share(options.vus))
        ]
        await self._wait_for(vus, options.max_duration)
        self._regular_over = True
        await self._finish(vus, options.max_duration + self.config.graceful_stop)

    async def _run_vu(self, vu: Any, iterations: int) -> None:
        self.state.vu_started()
        done = 0
        try:
            while done < iterations:
                if self._regular_over:
                    self._drop(iterations - done)
                    return
                done += 1
                await self._iterate(vu)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            if self._expired:  # gracefulStop ran out: the rest will never start
                self._drop(iterations - done)
            raise
        finally:
            self.state.vu_ended()
