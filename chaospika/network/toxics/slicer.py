"""slicer: data cut in pieces of `average_size` ± `size_variation` bytes, `delay` µs apart."""

import random
from typing import ClassVar

from chaospika.network.toxics.base import Chunk, Forward, Stage

__all__ = ["Slicer"]


class Slicer(Stage):
    """Re-cuts the stream (the bytes arrive intact, in more, smaller reads)."""

    type_name = "slicer"
    defaults: ClassVar[dict[str, float]] = {
        "average_size": 0,
        "size_variation": 0,
        "delay": 0,
    }
    integers = ("average_size", "size_variation")

    async def data(self, chunk: Chunk, forward: Forward) -> None:
        average = int(self.attribute("average_size"))
        if average <= 0 or self.stopped:
            await forward(chunk)
            return
        variation = min(int(self.attribute("size_variation")), average - 1)
        delay = self.attribute("delay") / 1_000_000.0
        data, start = chunk.data, 0
        while start < len(data):
            size = average + random.randint(-variation, variation)
            piece = data[start : start + size]
            start += size
            await forward(Chunk(piece, chunk.arrived))
            if delay and start < len(data):
                await self.pause_until(self.now() + delay)
