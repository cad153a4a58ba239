"""A small WebSocket fan-out server for the probes' tests, on its own thread and loop.

Clients send {"type": "join", "channel": C} (answered {"type": "joined"}) and
{"type": "message", "channel": C, ...}, which goes to every client joined to C.
`mode` picks the fan-out:
- "broadcast": websockets.broadcast, no waiting on any client (a correct fan-out);
- "blocking": each client in turn, awaiting each send (the slow-subscriber bug:
  a client that does not read holds up everybody once its buffers are full);
- "delay": like broadcast, `delay` seconds late.
`http_path` answers plain HTTP 200 there (a non-WebSocket endpoint).
"""

import asyncio
import json
import threading
import time
from http import HTTPStatus
from typing import Self

from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed

from chaospika._ports import free_port


class FanoutServer:
    def __init__(self, mode: str = "broadcast", delay: float = 0.0) -> None:
        self.mode = mode
        self.delay = delay
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.channels: dict[str, set] = {}
        self.connections = 0
        self.joins = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.stop_event: asyncio.Event | None = None

    def __enter__(self) -> Self:
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "fan-out server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)

    def _main(self) -> None:
        asyncio.run(self._serve())

    @staticmethod
    def _process_request(connection, request):
        if request.path == "/plain":
            return connection.respond(HTTPStatus.OK, "not a websocket\n")
        if request.path == "/missing":
            return connection.respond(HTTPStatus.NOT_FOUND, "no\n")
        return None

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        async with serve(
            self._handle,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
        ):
            self.ready.set()
            await self.stop_event.wait()

    async def _handle(self, connection) -> None:
        self.connections += 1
        joined = set()
        try:
            async for text in connection:
                data = json.loads(text)
                channel = data.get("channel", "")
                if data.get("type") == "join":
                    self.channels.setdefault(channel, set()).add(connection)
                    joined.add(channel)
                    self.joins += 1
                    await connection.send(json.dumps({"type": "joined"}))
                elif data.get("type") == "message":
                    data["server_at"] = time.time() * 1000
                    await self._fan_out(channel, json.dumps(data))
        except ConnectionClosed:
            pass
        finally:
            for channel in joined:
                self.channels[channel].discard(connection)

    async def _fan_out(self, channel: str, text: str) -> None:
        members = list(self.channels.get(channel, ()))
        if self.mode == "blocking":
            for member in members:
                try:
                    await member.send(text)
                except ConnectionClosed:
                    pass
        elif self.mode == "delay":
            self.loop.call_later(self.delay, broadcast, members, text)
        else:
            broadcast(members, text)


def main() -> None:
    """`python fanout.py PORT [MODE]`: serve until killed (for tests that need a process)."""
    import sys

    server = FanoutServer(sys.argv[2] if len(sys.argv) > 2 else "broadcast")
    server.port = int(sys.argv[1])
    asyncio.run(server._serve())


if __name__ == "__main__":
    main()
