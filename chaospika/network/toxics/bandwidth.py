"""bandwidth: at most `rate` KB/s (1 KB = 1000 bytes), sent in 100 ms pieces."""

from typing import ClassVar

from chaospika.network.toxics.base import Chunk, Forward, Link, Stage, Toxic

__all__ = ["Bandwidth"]


class Bandwidth(Stage):
    """Paces data against a clock, so sleeping late does not lower the rate."""

    type_name = "bandwidth"
    defaults: ClassVar[dict[str, float]] = {"rate": 0}

    def __init__(self, toxic: Toxic, link: Link) -> None:
        super().__init__(toxic, link)
        self.free_at = 0.0  # monotonic time the bytes sent so far have "used up"

    async def data(self, chunk: Chunk, forward: Forward) -> None:
        bytes_per_second = self.attribute("rate") * 1000.0
        if bytes_per_second <= 0 or self.stopped:
            await forward(chunk)
            return
        piece = max(1, int(bytes_per_second / 10))
        data = chunk.data
        for start in range(0, len(data), piece):
            part = data[start : start + piece]
            self.free_at = max(self.free_at, self.now())
            self.free_at += len(part) / bytes_per_second
            await self.pause_until(self.free_at)
            await forward(Chunk(part, chunk.arrived))
