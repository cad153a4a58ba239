"""A test's own aiohttp server on a free 127.0.0.1 port, run with `async with`."""

from typing import Self

from aiohttp import web


class LocalApp:
    """Subclasses set `port` and `runner` (a web.AppRunner of their routes)."""

    port: int
    runner: web.AppRunner

    async def __aenter__(self) -> Self:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()
