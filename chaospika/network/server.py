"""The fault proxy server: Toxiproxy's API and its proxies, in-process or as a command.

``python -m chaospika.network.server --listen 127.0.0.1:8474 [--config proxies.json]``
(the config is Toxiproxy's ``-config`` file: a JSON list of proxies). In-process:
``await ProxyServer(...).start()`` on a running loop, or ``ProxyServerThread``
(its own thread and loop, uvloop when installed) from synchronous code.
"""

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
import threading
from typing import Any, Self

from aiohttp import web

from chaospika import __version__
from chaospika.network.addresses import (
    DEFAULT_ALLOW_HOSTS,
    checked_address,
    format_address,
)
from chaospika.network.api import make_app
from chaospika.network.collection import ProxyCollection
from chaospika.network.errors import ApiError
from chaospika.network.priority import RELAY_NICE, ThreadPriority

__all__ = ["ProxyServer", "ProxyServerThread", "main", "new_event_loop"]

logger = logging.getLogger("chaospika.network")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ProxyServer:
    """The API on `listen` and the proxies it manages, on the running loop."""

    def __init__(
        self,
        listen: str = "127.0.0.1:8474",
        proxies: list[dict[str, Any]] | None = None,
        allow_hosts: tuple[str, ...] = DEFAULT_ALLOW_HOSTS,
        relay_nice: int | None = RELAY_NICE,
    ) -> None:
        self.address = checked_address("--listen", listen, allow_hosts)
        self.initial = proxies or []
        self.collection = ProxyCollection(allow_hosts)
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.priority = ThreadPriority(relay_nice)

    async def start(self) -> str:
        """Populate the initial proxies, serve the API; return its URL.

        The loop's thread takes nice `relay_nice` when permitted (`priority`): a
        delayed chunk then leaves when due, not after another task's tick.
        """
        self.priority.raise_for_thread()
        await self.collection.populate(self.initial)
        self.runner = web.AppRunner(
            make_app(self.collection, __version__), access_log=None
        )
        await self.runner.setup()
        host, port = self.address
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        bound_port = self.runner.addresses[0][1]
        self.url = f"http://{format_address(host, bound_port)}"
        return self.url

    async def stop(self) -> None:
        """Close the API, every proxy and every proxied connection."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.collection.close()
        self.priority.restore()


class ProxyServerThread:
    """A `ProxyServer` on its own thread and event loop, for synchronous code."""

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        proxies: list[dict[str, Any]] | None = None,
        allow_hosts: tuple[str, ...] = DEFAULT_ALLOW_HOSTS,
        relay_nice: int | None = RELAY_NICE,
    ) -> None:
        self.server = ProxyServer(listen, proxies, allow_hosts, relay_nice)
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; return the API URL (raises what stopped it from starting)."""
        self._thread = threading.Thread(
            target=self._run, name="chaospika-proxy", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the proxy server did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread (safe to call twice)."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_set_done, stopping)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop = new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except Exception as error:  # noqa: BLE001 - handed to start()
            self._error = error
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.get_running_loop().create_future()
        self.url = await self.server.start()
        self._ready.set()
        try:
            await self._stopping
        finally:
            await self.server.stop()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaospika.network.server",
        description="A TCP fault proxy with Toxiproxy's HTTP API.",
    )
    parser.add_argument("--listen", default="127.0.0.1:8474", help="API address")
    parser.add_argument(
        "--config", "-config", help="JSON list of proxies to create at start"
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="PATTERN",
        help="also allow this CIDR or host glob (default: loopback only)",
    )
    parser.add_argument(
        "--relay-nice",
        type=int,
        default=RELAY_NICE,
        metavar="N",
        help=f"nice value of the relaying thread when permitted (default {RELAY_NICE};"
        " 0 keeps the usual priority)",
    )
    return parser.parse_args(argv)


async def _serve_until_signal(server: ProxyServer) -> None:
    url = await server.start()
    # what start-up made (imports, the API) leaves the collector's generations:
    # a full collection, a stall of every connection, then walks only what
    # serving creates (one over all ~49,000 objects took 39 ms on a busy VM)
    gc.freeze()
    print(f"chaospika proxy server listening on {url}", flush=True)
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, _set_done, stop)
    try:
        await stop
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; 2 on a bad argument or config."""
    args = _arguments(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    try:
        proxies = []
        if args.config:
            with open(args.config) as handle:
                proxies = json.load(handle)
        allow = DEFAULT_ALLOW_HOSTS + tuple(args.allow_host)
        server = ProxyServer(args.listen, proxies, allow, args.relay_nice)
        loop = new_event_loop()
        try:
            loop.run_until_complete(_serve_until_signal(server))
        finally:
            loop.close()
    except ApiError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
