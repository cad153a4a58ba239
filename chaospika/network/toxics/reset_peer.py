"""reset_peer: `timeout` ms after the first data, both sockets are reset (TCP RST).

As in Toxiproxy the data is dropped, and the reset uses SO_LINGER 0, so the
client sees "connection reset by peer" rather than a clean end of stream.
"""

from typing import ClassVar

from chaospika.network.toxics.base import Chunk, Forward, Stage

__all__ = ["ResetPeer"]


class ResetPeer(Stage):
    """Drops data and resets the connection a while after the first chunk."""

    type_name = "reset_peer"
    defaults: ClassVar[dict[str, float]] = {"timeout": 0}

    async def data(self, chunk: Chunk, forward: Forward) -> None:
        if self.stopped:
            await forward(chunk)
            return
        if not self._timers:
            self.later(self.attribute("timeout") / 1000.0, self.link.reset_connection)
