"""timeout: nothing gets through; the connection closes after `timeout` ms (0: never).

The clock starts when the toxic reaches the connection; removing the toxic lets
new data through again (what it swallowed is lost).
"""

from typing import ClassVar

from chaospika.network.toxics.base import Chunk, Forward, ForwardEof, Stage

__all__ = ["Timeout"]


class Timeout(Stage):
    """A blackhole with an optional close."""

    type_name = "timeout"
    defaults: ClassVar[dict[str, float]] = {"timeout": 0}

    def start(self) -> None:
        timeout = self.attribute("timeout")
        if timeout > 0:
            self.later(timeout / 1000.0, self.link.close_connection)

    async def data(self, chunk: Chunk, forward: Forward) -> None:
        if self.stopped:
            await forward(chunk)

    async def eof(self, forward: ForwardEof) -> None:
        await self.pause_forever()  # the peer's close is swallowed too
        await forward()
