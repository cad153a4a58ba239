"""latency: every chunk waits `latency` ms (± `jitter` ms) after it arrived."""

import random
from typing import ClassVar

from chaospika.network.toxics.base import Chunk, Forward, Stage

__all__ = ["Latency"]


class Latency(Stage):
    """Delays data; chunks keep their order and overlap in flight (a pipe, not a queue)."""

    type_name = "latency"
    defaults: ClassVar[dict[str, float]] = {"latency": 0, "jitter": 0}

    async def data(self, chunk: Chunk, forward: Forward) -> None:
        delay = self.attribute("latency")
        jitter = self.attribute("jitter")
        if jitter:
            delay += random.uniform(-jitter, jitter)
        await self.pause_until(chunk.arrived + max(0.0, delay) / 1000.0)
        await forward(chunk)
