"""latency: every chunk waits `latency` ms (± `jitter` ms) after it arrived.

A direction whose only toxics are latency ones does not run this stage's
`data`: the link delays its chunks itself (see `link.Direction`), from the same
`delay()`, with the same order and the same deadlines.
"""

import random
from collections.abc import Callable
from typing import ClassVar

from chaospika.network.toxics.base import Chunk, Forward, Stage

__all__ = ["Latency", "observe_lateness"]


class Latency(Stage):
    """Delays data; chunks keep their order and overlap in flight (a pipe, not a queue)."""

    type_name = "latency"
    defaults: ClassVar[dict[str, float]] = {"latency": 0, "jitter": 0}
    # called with how late (s) each delayed chunk leaves; None: not measured
    on_forward: ClassVar[Callable[[float], None] | None] = None

    def delay(self) -> float:
        """Seconds the next chunk waits: `latency` ± a random `jitter`."""
        delay = self.attribute("latency")
        jitter = self.attribute("jitter")
        if jitter:
            delay += random.uniform(-jitter, jitter)
        return max(0.0, delay) / 1000.0

    async def data(self, chunk: Chunk, forward: Forward) -> None:
        due = chunk.arrived + self.delay()
        await self.pause_until(due)
        if not self.stopped:
            observe_lateness(self.now() - due)
        await forward(chunk)


def observe_lateness(seconds: float) -> None:
    """Report how late a delayed chunk left (to `Latency.on_forward`, if set)."""
    observe = Latency.on_forward
    if observe is not None:
        observe(seconds)
