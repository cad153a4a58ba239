"""slow_close: the end of the stream is handed on `delay` ms late."""

from typing import ClassVar

from chaospika.network.toxics.base import ForwardEof, Stage

__all__ = ["SlowClose"]


class SlowClose(Stage):
    """Delays the close (FIN) of the stream, not its data."""

    type_name = "slow_close"
    defaults: ClassVar[dict[str, float]] = {"delay": 0}

    async def eof(self, forward: ForwardEof) -> None:
        await self.pause_until(self.now() + self.attribute("delay") / 1000.0)
        await forward()
