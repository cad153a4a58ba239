"""The open model shared by both arrival-rate executors.

Iterations start on an absolute schedule (offsets from the scenario start, no
drift: a late wake-up starts every iteration already due). Event-loop timers
tick in milliseconds, so an iteration due in less than TIMER_RESOLUTION starts
at once: starts are within about a millisecond of their due time. Each start takes a
free VU; with none free the iteration is dropped (dropped_iterations) and, while
below maxVUs, one more VU is allocated for the next ones, as k6 does.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from typing import Any

from chaospika.loadengine.executors.base import Executor

__all__ = ["TIMER_RESOLUTION", "ArrivalRateExecutor"]

logger = logging.getLogger("chaostoolkit")

TIMER_RESOLUTION = 0.001  # seconds: uvloop's (libuv's) timers count milliseconds


class ArrivalRateExecutor(Executor):
    """Base of constant-arrival-rate and ramping-arrival-rate."""

    wait_regular_end = True  # constant-arrival-rate idles until its duration ends

    def _arrivals(self) -> Iterator[float]:
        """Start offsets (seconds, ascending) of this stripe's iterations."""
        raise NotImplementedError

    async def _execute(self) -> None:
        options = self.options
        self._free: deque[asyncio.Future] = deque()
        self._spare = self.segment.share(options.max_vus) - self.segment.share(
            options.pre_allocated_vus
        )
        self._warned = False
        for _ in range(self.segment.share(options.pre_allocated_vus)):
            self._add_vu()
        clock, sleep, start = self.clock, asyncio.sleep, self._t0
        for offset in self._arrivals():
            delay = start + offset - clock()
            if delay > TIMER_RESOLUTION:
                await sleep(delay)  # may wake up to TIMER_RESOLUTION early
            elif not self._free:
                await sleep(0)  # VUs woken in this burst may be free again by now
            self._start_iteration()
        regular = self.regular_duration(options)
        if self.wait_regular_end:
            await self._sleep_until(regular)
        self._regular_over = True
        while self._free:
            self._free.popleft().cancel()
        await self._finish(list(self._tasks), regular + self.config.graceful_stop)

    def _start_iteration(self) -> None:
        if self._free:
            self._free.popleft().set_result(None)
            return
        self._drop(1)
        if self._spare > 0:
            self._spare -= 1
            self.state.max_vus += 1
            self._add_vu()
        elif not self._warned:
            self._warned = True
            logger.warning(
                "scenario %s: insufficient VUs, reached %d active VUs and cannot "
                "initialize more",
                self.config.name,
                self.segment.share(self.options.max_vus),
            )

    def _add_vu(self) -> None:
        turn = asyncio.get_running_loop().create_future()
        self._free.append(turn)
        self._spawn(self._serve(self._new_vu(), turn))

    async def _serve(self, vu: Any, turn: asyncio.Future) -> None:
        """One VU: wait for its turn, run an iteration, queue up again."""
        loop = asyncio.get_running_loop()
        self.state.vu_started()
        try:
            while True:
                await turn
                await self._iterate(vu)
                if self._regular_over or self.stop.is_set():
                    return
                turn = loop.create_future()
                self._free.append(turn)
        finally:
            self.state.vu_ended()
