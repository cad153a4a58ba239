"""What every toxic shares: its spec (`Toxic`), and `Stage`, a toxic at work on a link.

A `Toxic` is what the API stores: name, type, stream, toxicity, attributes and an
optional expiry. For each connection it affects (decided per connection with
probability `toxicity`), the proxy opens one `Stage` of the toxic's type on the
direction named by `stream`. Chunks pass through the stages of a direction in
order, each stage awaiting `forward(chunk)` to hand data on; `eof(forward)` hands
on the end of the stream. A stage never loops over bytes: it slices `bytes`.
"""

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Protocol

from chaospika.network.toxics.timer import call_at

__all__ = ["STREAMS", "Chunk", "Forward", "ForwardEof", "Link", "Stage", "Toxic"]

STREAMS = ("upstream", "downstream")
_uids = itertools.count(1)


@dataclass(frozen=True)
class Chunk:
    """Bytes read from one socket, with the `time.monotonic()` they arrived at."""

    data: bytes
    arrived: float


Forward = Callable[[Chunk], Awaitable[None]]
ForwardEof = Callable[[], Awaitable[None]]


class Link(Protocol):
    """What a stage may do to the connection it works on."""

    loop: asyncio.AbstractEventLoop

    def close_connection(self) -> None:
        """Close both sockets (buffered data is flushed first)."""

    def reset_connection(self) -> None:
        """Close both sockets with a TCP RST (SO_LINGER 0)."""


@dataclass
class Toxic:
    """A toxic as the API stores and shows it; `uid` tells versions apart."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, float]
    expires_at: float | None = None
    uid: int = field(default_factory=lambda: next(_uids))

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }
        if self.expires_at is not None:
            shown["expires_at"] = self.expires_at
            shown["ttl"] = round(max(0.0, self.expires_at - time.time()), 3)
        return shown


class Stage:
    """One toxic at work on one direction of one connection (base: passes all)."""

    type_name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, float]] = {}
    integers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, toxic: Toxic, link: Link) -> None:
        self.toxic = toxic
        self.link = link
        self.loop = link.loop
        self.stopped = False
        self._waiters: set[asyncio.Future[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []

    def attribute(self, key: str) -> float:
        """The attribute `key` of the toxic (its default when not given)."""
        return self.toxic.attributes.get(key, self.defaults[key])

    def start(self) -> None:
        """Called once the stage is in place (timers start here)."""

    async def data(self, chunk: Chunk, forward: Forward) -> None:
        """Hand `chunk` on, changed, delayed or not at all."""
        await forward(chunk)

    async def eof(self, forward: ForwardEof) -> None:
        """Hand on the end of the stream (the source closed its side)."""
        await forward()

    def stop(self) -> None:
        """The toxic is gone or the connection closed: wake sleepers, drop timers."""
        self.stopped = True
        for timer in self._timers:
            timer.cancel()
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    def now(self) -> float:
        """The clock of `Chunk.arrived` and of `pause_until` deadlines."""
        return time.monotonic()

    def later(self, seconds: float, callback: Callable[[], None]) -> None:
        """Run `callback` in `seconds`, unless the stage stops first."""
        self._timers.append(self.loop.call_later(seconds, callback))

    async def pause_until(self, deadline: float) -> None:
        """Sleep until `time.monotonic()` reaches `deadline`, or the stage stops."""
        if self.stopped or deadline <= time.monotonic():
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        forever = deadline == float("inf")
        timer = (
            None if forever else call_at(self.loop, deadline, partial(_wake, waiter))
        )
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiters.discard(waiter)

    async def pause_forever(self) -> None:
        """Sleep until the stage stops."""
        await self.pause_until(float("inf"))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
