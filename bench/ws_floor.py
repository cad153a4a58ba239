"""The WebSocket benchmark's floor: the same traffic from a bare uvloop client.

`python bench/ws_floor.py URL VUS SECONDS COUNT EVERY_MS TIMEOUT_MS` prints one
JSON line. No engine: no scenario, metrics, checks, templates or progress, only
what any asyncio client needs for this workload: `VUS` loops, each opening a
WebSocket, sending COUNT small JSON messages every EVERY_MS (the first at once)
from loop timers, counting the echoes as uvloop delivers them, then closing with
the handshake; new sessions start until SECONDS have passed. Its CPU per 1,000
messages is what the I/O model alone costs on the machine (one write per message,
echoes read as they arrive), so the bench can say how far above that the engine is.
"""

import asyncio
import base64
import json
import os
import sys
import time
from urllib.parse import urlsplit

import uvloop
from websockets.speedups import apply_mask


class EchoCounter(asyncio.Protocol):
    """One client connection: the upgrade, then text frames counted, close noticed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expect: int) -> None:
        self.expect = expect
        self.opened = loop.create_future()
        self.all_received = loop.create_future()
        self.closed = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        data = self.buffer + data if self.buffer else data
        position = 0
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(OSError("upgrade refused"))
                return
            self.upgraded = True
            self.opened.set_result(None)
            position = end + 4
        while len(data) - position >= 2:
            opcode, length = data[position] & 0x0F, data[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                length = int.from_bytes(data[start : start + 2], "big")
                start += 2
            if start + length > len(data):
                break
            position = start + length
            if opcode == 8:
                _settle(self.closed)
            elif opcode == 1:
                self.received += 1
                if self.received == self.expect:
                    _settle(self.all_received)
        self.buffer = data[position:]

    def connection_lost(self, exc: Exception | None) -> None:
        _settle(self.closed)
        if not self.opened.done():
            self.opened.set_exception(OSError("connection lost"))

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        head = bytes((0x81, 0x80 | len(payload)))  # small messages only (< 126 bytes)
        self.transport.write(head + mask + apply_mask(payload, mask))  # type: ignore[union-attr]

    def send_close(self) -> None:
        mask = os.urandom(4)
        self.transport.write(b"\x88\x82" + mask + apply_mask(b"\x03\xe8", mask))  # type: ignore[union-attr]


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Floor:
    """The workload: VUS loops of sessions until the duration is over."""

    def __init__(
        self,
        url: str,
        vus: int,
        seconds: float,
        count: int,
        every: float,
        timeout: float,
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/"
        self.vus, self.seconds, self.count = vus, seconds, count
        self.every, self.timeout = every, timeout
        self.sent = self.received = self.sessions = self.complete = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.seconds
        await asyncio.gather(
            *(self._vu(loop, vu, end) for vu in range(1, self.vus + 1))
        )

    async def _vu(self, loop: asyncio.AbstractEventLoop, vu: int, end: float) -> None:
        while loop.time() < end:
            await self._session(loop, vu)

    async def _session(self, loop: asyncio.AbstractEventLoop, vu: int) -> None:
        protocol = EchoCounter(loop, self.count)
        await loop.create_connection(lambda: protocol, self.host, self.port)
        key = base64.b64encode(os.urandom(16)).decode()
        protocol.transport.write(  # type: ignore[union-attr]
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await protocol.opened
        self.sessions += 1
        began, sent = loop.time(), 0

        def send() -> None:
            nonlocal sent
            protocol.send_text(
                '{"sent_at":' + str(int(time.time() * 1000)) + ',"vu":' + str(vu) + "}"
            )
            sent += 1
            if sent < self.count:
                loop.call_at(began + sent * self.every, send)

        send()
        try:
            await asyncio.wait_for(asyncio.shield(protocol.all_received), self.timeout)
            self.complete += 1
        except TimeoutError:
            pass
        self.sent += sent
        self.received += protocol.received
        protocol.send_close()
        try:
            await asyncio.wait_for(protocol.closed, 1.0)
        except TimeoutError:
            pass
        protocol.transport.close()  # type: ignore[union-attr]


def main(
    url: str, vus: str, seconds: str, count: str, every_ms: str, timeout_ms: str
) -> None:
    floor = Floor(
        url,
        int(vus),
        float(seconds),
        int(count),
        float(every_ms) / 1000,
        float(timeout_ms) / 1000,
    )
    began = time.monotonic()
    uvloop.run(floor.run())
    print(
        json.dumps(
            {
                "duration_s": time.monotonic() - began,
                "ws_msgs_sent": floor.sent,
                "ws_msgs_received": floor.received,
                "sessions": floor.sessions,
                "complete": floor.complete,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:7])
