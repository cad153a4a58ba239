"""WebSocket echo server for the benchmarks: `python bench/ws_echo.py PORT`."""

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, serve


async def echo(connection: ServerConnection) -> None:
    """Send every message back as it came."""
    async for message in connection:
        await connection.send(message)


async def main(port: int) -> None:
    async with serve(
        echo, "127.0.0.1", port, compression=None, ping_interval=None, backlog=4096
    ):
        await asyncio.get_running_loop().create_future()  # until killed


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is an optional extra
        asyncio.run(main(int(sys.argv[1])))
    else:
        uvloop.run(main(int(sys.argv[1])))
