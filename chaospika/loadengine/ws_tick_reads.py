"""Reading WebSocket connections at the send ticks instead of waking for each message.

A loop whose `ws` steps send on an interval wakes at every millisecond with sends
due (ws_plan's `_Ticker`). Between two such ticks the echoes of the messages just
sent arrive one by one, and waking the loop for each costs more than handling the
message: a sleep and a wake-up of the process are about 30 µs of CPU on a small
VM, against a few µs to read and count a message. So while a connection is
sending, its reading is taken from the loop (`pause_reading`) and put on one
epoll set of our own, which each tick polls without waiting, reading what has
arrived. When no tick is due in the next millisecond, the epoll set is a reader
of the loop, so a message never waits more than about a millisecond.

Only plain `ws://` connections whose step measures no message latency are read
this way (ws_plan decides): a latency is taken when a message is read, so it
must be read as it arrives. The bytes go to the protocol's own `data_received`.
"""

import asyncio
import os
import select
from typing import Any

__all__ = ["TickReads"]

_READ_SIZE = 256 * 1024


class TickReads:
    """The connections of one loop that are read at its send ticks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.poller: select.epoll | None = None  # made at the first connection
        self.protocols: dict[int, Any] = {}  # file descriptor -> protocol
        self.watching = False  # the epoll set is a reader of the loop
        buffer = bytearray(_READ_SIZE)  # reused: no allocation as big per read
        self.buffers, self.view = [buffer], memoryview(buffer)

    def add(self, protocol: Any) -> int | None:
        """Read `protocol`'s connection at ticks; its file descriptor, or None when
        it must stay with the loop (TLS, closing, no socket)."""
        transport = protocol.transport
        if transport is None or transport.is_closing():
            return None
        if transport.get_extra_info("sslcontext") is not None:
            return None  # the socket carries TLS records, not frames
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd < 0 or fd in self.protocols or not hasattr(select, "epoll"):
            return None  # epoll is Linux's: elsewhere the loop reads as before
        if self.poller is None:
            self.poller = select.epoll()
        transport.pause_reading()
        self.poller.register(fd, select.EPOLLIN)
        self.protocols[fd] = protocol
        self._watch(True)  # until a tick says another one is due soon
        return fd

    def remove(self, fd: int, protocol: Any) -> None:
        """Give `protocol`'s connection back to the loop (safe to call twice)."""
        if self.protocols.get(fd) is not protocol:
            return
        del self.protocols[fd]
        try:
            self.poller.unregister(fd)  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass  # the socket is closed already: epoll dropped it
        transport = protocol.transport
        if not transport.is_closing():
            transport.resume_reading()  # bytes left in the socket are read at once
        if not self.protocols:
            self._watch(False)

    def read(self) -> None:
        """Hand what has arrived on every connection to its protocol; no waiting."""
        if not self.protocols:
            return
        for fd, _ in self.poller.poll(0):  # type: ignore[union-attr]
            protocol = self.protocols.get(fd)
            if protocol is None:
                continue
            try:
                size = os.readv(fd, self.buffers)
            except BlockingIOError:
                continue
            except OSError:
                size = 0
            if not size:  # end of stream or an error: the loop reads and reports it
                self.remove(fd, protocol)
                continue
            protocol.data_received(self.view[:size].tobytes())
            if protocol.transport.is_closing():
                self.remove(fd, protocol)

    def after_tick(self, tick_soon: bool) -> None:
        """After a tick: leave arrivals to the next tick when one is due within a
        millisecond (`tick_soon`), else let them wake the loop."""
        self._watch(bool(self.protocols) and not tick_soon)

    def _watch(self, on: bool) -> None:
        if on == self.watching:
            return
        self.watching = on
        fileno = self.poller.fileno()  # type: ignore[union-attr]
        if on:
            self.loop.add_reader(fileno, self.read)
        else:
            self.loop.remove_reader(fileno)
