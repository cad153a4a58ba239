"""limit_data: `bytes` bytes get through, then the connection is closed."""

from typing import ClassVar

from chaospika.network.toxics.base import Chunk, Forward, Link, Stage, Toxic

__all__ = ["LimitData"]


class LimitData(Stage):
    """Counts the bytes handed on in its direction; closes at the limit."""

    type_name = "limit_data"
    defaults: ClassVar[dict[str, float]] = {"bytes": 0}
    integers = ("bytes",)

    def __init__(self, toxic: Toxic, link: Link) -> None:
        super().__init__(toxic, link)
        self.sent = 0

    async def data(self, chunk: Chunk, forward: Forward) -> None:
        if self.stopped:
            await forward(chunk)
            return
        remaining = int(self.attribute("bytes")) - self.sent
        if remaining > 0:
            part = chunk.data[:remaining]
            self.sent += len(part)
            await forward(Chunk(part, chunk.arrived))
        if self.sent >= int(self.attribute("bytes")):
            self.link.close_connection()
