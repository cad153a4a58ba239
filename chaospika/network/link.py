"""One proxied TCP connection: two sockets (`Side`), two directions (`Direction`).

Without toxics a direction writes what it reads straight to the other socket
(asyncio protocols, no copies, no task). With only latency toxics, the direction
delays its chunks itself: each gets its deadline when read and waits in a FIFO,
and one precise timer (`toxics.timer`) writes every chunk that is due (no task,
no coroutine per chunk). With other toxics, chunks queue and one task per
direction takes each through the toxics' stages in order. Flow control: a
socket stops being read while the other's write buffer is full or the queue
holds more than `QUEUE_HIGH` bytes.
"""

import asyncio
import logging
import random
import socket
import struct
import time
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, cast

from chaospika.network.toxics import Toxic, open_stage
from chaospika.network.toxics.base import Chunk, Stage
from chaospika.network.toxics.latency import Latency, observe_lateness
from chaospika.network.toxics.timer import TimerHandle, call_at

if TYPE_CHECKING:
    from chaospika.network.proxy import Proxy

__all__ = ["Connection", "Direction", "Side"]

QUEUE_HIGH = 256 * 1024
QUEUE_LOW = 64 * 1024
logger = logging.getLogger("chaospika.network")


class Side(asyncio.Protocol):
    """One socket of a connection: the client's or the upstream's."""

    def __init__(self, connection: "Connection", role: str) -> None:
        self.connection = connection
        self.role = role
        self.transport: asyncio.Transport | None = None
        self.drained: asyncio.Future[None] | None = None  # set while writes wait
        self.holds: set[str] = set()
        self.lost = False  # connection_lost came: no callback can follow

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(
            asyncio.Transport, transport
        )  # uvloop's are not subclasses
        self.connection.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.connection.received(self, data)

    def eof_received(self) -> bool:
        self.connection.eof_from(self)
        return True  # stay open for writing: the other way may still flow

    def connection_lost(self, exc: Exception | None) -> None:
        connection = self.connection
        connection.lost(self, exc)
        self.lost = True
        self.transport = None  # the transport holds this protocol: no cycle left
        connection.dispose_if_done()

    def pause_writing(self) -> None:
        self.drained = self.connection.loop.create_future()
        self.connection.other(self).hold("sink")

    def resume_writing(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None
        self.connection.other(self).release("sink")

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def hold(self, reason: str) -> None:
        """Stop reading this socket for `reason` (until released)."""
        if not self.holds and self.open:
            self.transport.pause_reading()
        self.holds.add(reason)

    def release(self, reason: str) -> None:
        """Read again once no reason holds."""
        if reason in self.holds:
            self.holds.discard(reason)
            if not self.holds and self.open:
                self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.open:
            self.transport.write(data)

    async def send(self, data: bytes) -> None:
        """Write `data`; wait while the socket's write buffer is full."""
        self.write(data)
        if self.drained is not None:
            await self.drained

    def write_eof(self) -> None:
        if self.open and self.transport.can_write_eof():
            self.transport.write_eof()

    def reset(self) -> None:
        """Close with a TCP RST: SO_LINGER on, timeout 0, then abort."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                linger = struct.pack("ii", 1, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            except OSError:
                pass
        self.transport.abort()


class Direction:
    """One way of a connection and the stages of the toxics on it."""

    def __init__(
        self, connection: "Connection", stream: str, source: Side, sink: Side
    ) -> None:
        self.connection = connection
        self.loop = connection.loop
        self.stream = stream
        self.source = source
        self.sink = sink
        self.stages: dict[int, Stage] = {}  # by toxic uid, in the proxy's order
        self.pending: deque[Chunk] = deque()
        self.pending_bytes = 0
        self.eof_seen = False
        self.finished = False
        self.worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self.delays: list[Latency] | None = None  # latency toxics only: delayed here
        self.delayed: deque[tuple[float, Chunk]] = deque()  # (deadline, chunk)
        self._last_due = 0.0
        self._timer: TimerHandle | None = None

    # the Link protocol of the stages
    def close_connection(self) -> None:
        if self.connection is not None:
            self.connection.close()

    def reset_connection(self) -> None:
        if self.connection is not None:
            self.connection.reset()

    def receive(self, data: bytes) -> None:
        """Data read from the source: straight through, or queued for the stages."""
        if self.finished:
            return
        if self.worker is None:
            if not self.stages:
                self.sink.write(data)
                return
            if self.delays is not None:
                self._delay(Chunk(data, time.monotonic()))
                return
        self.pending.append(Chunk(data, time.monotonic()))
        self._count(len(data))
        self._wake()

    def eof(self) -> None:
        """The source closed its side."""
        self.eof_seen = True
        if self.worker is None and (self.delays is not None or not self.stages):
            if not self.delayed:
                self._finish()  # else once the last delayed chunk has left
        else:
            self._wake()

    def _count(self, size: int) -> None:
        self.pending_bytes += size
        if self.pending_bytes > QUEUE_HIGH:
            self.source.hold("queue")

    def _uncount(self, size: int) -> None:
        self.pending_bytes -= size
        if self.pending_bytes < QUEUE_LOW:
            self.source.release("queue")

    def _delay(self, chunk: Chunk) -> None:
        """Latency toxics only: `chunk` leaves at its deadline, after those before it."""
        delays = self.delays or ()
        due = max(self._last_due, chunk.arrived + max(d.delay() for d in delays))
        self._last_due = due
        self.delayed.append((due, chunk))
        self._count(len(chunk.data))
        if self._timer is None:
            self._timer = call_at(self.loop, due, self._release_due)

    def _release_due(self) -> None:
        """Write every delayed chunk whose deadline has come; re-arm for the next."""
        self._timer = None
        now, delayed = time.monotonic(), self.delayed
        while delayed and delayed[0][0] <= now:
            due, chunk = delayed.popleft()
            observe_lateness(now - due)
            self._uncount(len(chunk.data))
            self.sink.write(chunk.data)
        if delayed:
            self._timer = call_at(self.loop, delayed[0][0], self._release_due)
        elif self.eof_seen and self.worker is None:
            self._finish()

    def _undelay(self) -> None:
        """Hand the chunks still delayed here to the stages' task, in order."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.delayed:
            self.pending.appendleft(self.delayed.pop()[1])
        self._last_due = 0.0

    def set_toxics(self, toxics: list[Toxic]) -> None:
        """Run exactly `toxics` on this direction: open new stages, stop gone ones."""
        stages, started = {}, []
        for toxic in toxics:
            stage = self.stages.get(toxic.uid)
            if stage is None:
                stage = open_stage(toxic, self)
                started.append(stage)
            stages[toxic.uid] = stage
        stopped = [stage for uid, stage in self.stages.items() if uid not in stages]
        for stage in stopped:
            stage.stop()
        self.stages = stages
        for stage in started:
            stage.start()
        if started or stopped:
            self._undelay()
        latency_only = all(isinstance(stage, Latency) for stage in stages.values())
        self.delays = list(stages.values()) if stages and latency_only else None
        needed = self.pending or (self.stages and self.delays is None)
        if needed and self.worker is None and not self.finished:
            self.worker = self.loop.create_task(self._work())
        self._wake()

    def stop(self) -> None:
        for stage in self.stages.values():
            stage.stop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.delayed.clear()
        if self.worker is not None:
            self.worker.cancel()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def dispose(self) -> None:
        """Drop the stages and the way back to the connection (see `Connection.dispose_if_done`)."""
        self.stages = {}
        self.delays = None
        self.pending.clear()
        self.delayed.clear()
        self._wakeup = None
        self.connection = None  # type: ignore[assignment]

    async def _work(self) -> None:
        try:
            while not self.connection.closed:
                if self.pending:
                    chunk = self.pending.popleft()
                    self._uncount(len(chunk.data))
                    await self._through(list(self.stages.values()), 0, chunk)
                elif self.eof_seen:
                    await self._eof_through(list(self.stages.values()), 0)
                    return
                elif not self.stages or self.delays is not None:
                    return  # back to the straight path, or to delaying here
                else:
                    self._wakeup = self.loop.create_future()
                    await self._wakeup
        except asyncio.CancelledError:
            pass
        except Exception:  # a toxic's bug must not kill the proxy
            logger.exception(
                "proxy %s: %s toxics failed", self.connection.name, self.stream
            )
            self.connection.close()
        finally:
            self.worker = None
            if self.connection is not None and self.connection.closed:
                self.connection.dispose_if_done()

    async def _through(self, stages: list[Stage], index: int, chunk: Chunk) -> None:
        while index < len(stages) and stages[index].stopped:
            index += 1
        if index == len(stages):
            await self.sink.send(chunk.data)
            return
        await stages[index].data(chunk, partial(self._through, stages, index + 1))

    async def _eof_through(self, stages: list[Stage], index: int) -> None:
        while index < len(stages) and stages[index].stopped:
            index += 1
        if index == len(stages):
            self._finish()
            return
        await stages[index].eof(partial(self._eof_through, stages, index + 1))

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.sink.write_eof()
            self.connection.direction_finished()


class Connection:
    """A client connection to a proxy and its connection to the upstream."""

    def __init__(self, proxy: "Proxy") -> None:
        self.proxy = proxy
        self.name = proxy.name
        self.loop = asyncio.get_running_loop()
        self.client = Side(self, "client")
        self.server = Side(self, "upstream")
        self.upstream = Direction(self, "upstream", self.client, self.server)
        self.downstream = Direction(self, "downstream", self.server, self.client)
        self.affected: dict[int, bool] = {}  # toxic uid -> chosen by its toxicity
        self.closed = False
        self.connecting: asyncio.Task[None] | None = None
        self.early: (
            list[bytes] | None
        ) = []  # what the client sent before upstream was up
        self.early_eof = False
        self.disposed = False

    def other(self, side: Side) -> Side:
        return self.server if side is self.client else self.client

    def side_made(self, side: Side) -> None:
        if side is self.client:
            side.hold("connecting")
            self.proxy.connections.add(self)
            self.connecting = self.loop.create_task(self._connect())  # kept: not GCed

    async def _connect(self) -> None:
        try:
            await self._connect_upstream()
        finally:
            self.connecting = None
            self.dispose_if_done()

    async def _connect_upstream(self) -> None:
        host, port = self.proxy.upstream_address
        try:
            await self.loop.create_connection(lambda: self.server, host, port)
        except OSError as error:
            logger.info("proxy %s: upstream %s refused: %s", self.name, port, error)
            self.close()
            return
        if self.closed:
            self.server.transport.close()
            return
        self.apply_toxics(list(self.proxy.toxics.values()))
        early, self.early = self.early or [], None
        for data in early:
            self.upstream.receive(data)
        if self.early_eof:
            self.upstream.eof()
        self.client.release("connecting")

    def apply_toxics(self, toxics: list[Toxic]) -> None:
        """Put the proxy's current toxics on this connection (toxicity per connection)."""
        if self.closed:
            return
        for direction in (self.upstream, self.downstream):
            direction.set_toxics(
                [t for t in toxics if t.stream == direction.stream and self._hit(t)]
            )

    def _hit(self, toxic: Toxic) -> bool:
        if toxic.uid not in self.affected:
            self.affected[toxic.uid] = random.random() < toxic.toxicity
        return self.affected[toxic.uid]

    def received(self, side: Side, data: bytes) -> None:
        if self.early is not None:  # some loops read before pause_reading holds
            self.early.append(data)
            side.hold("connecting")
            return
        (self.upstream if side is self.client else self.downstream).receive(data)

    def eof_from(self, side: Side) -> None:
        if self.early is not None:
            self.early_eof = True
            return
        (self.upstream if side is self.client else self.downstream).eof()

    def direction_finished(self) -> None:
        if self.upstream.finished and self.downstream.finished:
            self.close()

    def lost(self, side: Side, exc: Exception | None) -> None:
        if exc is not None and not self.closed:
            self.reset()  # the peer reset: so does the proxy, toward the other
        self.close()

    def close(self) -> None:
        """Close both sockets (what they buffered is flushed first)."""
        if self.closed:
            return
        self.closed = True
        self.upstream.stop()
        self.downstream.stop()
        for side in (self.client, self.server):
            if side.transport is not None:
                side.transport.close()
        self.proxy.connections.discard(self)

    def dispose_if_done(self) -> None:
        """Once closed and nothing can call back, break the reference cycles.

        A connection, its sides, directions, stages and transports refer to each
        other; left so, every closed connection (~25 objects) waited for the cyclic
        collector, and its full pass over that pile stalled every delayed chunk (14
        ms for 23,305 objects in the proxy bench). Done when both sockets reported
        connection_lost (or the upstream never connected) and the connect task and
        the stages' task have ended.
        """
        if self.disposed or not self.closed or not self.client.lost:
            return
        if self.server.transport is not None and not self.server.lost:
            return  # its connection_lost is still to come
        if self.connecting is not None:
            return  # _connect calls again when it ends
        if self.upstream.worker is not None or self.downstream.worker is not None:
            return  # each worker calls again when it ends
        self.disposed = True
        self.upstream.dispose()
        self.downstream.dispose()
        self.client.connection = self.server.connection = None  # type: ignore[assignment]

    def reset(self) -> None:
        """Reset both sockets (TCP RST), dropping what they buffered."""
        self.client.reset()
        self.server.reset()
        self.close()
