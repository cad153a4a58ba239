"""One proxy: a listening socket, its upstream, its toxics and live connections.

Besides Toxiproxy's fields, a disabled proxy may carry ``enable_at`` (Unix time,
set by a disable with ``ttl``): the proxy is then enabled again at that time by
the server itself (see `ProxyCollection.update`).
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from chaospika.network.addresses import format_address
from chaospika.network.errors import ApiError, conflict, not_found
from chaospika.network.link import Connection
from chaospika.network.toxics import Toxic

__all__ = ["Proxy"]

logger = logging.getLogger("chaospika.network")
# asyncio's default is 100: a burst of new clients overflows it and the kernel
# drops their handshakes (retried after 1 s); the kernel caps this at somaxconn
LISTEN_BACKLOG = 4096


class Proxy:
    """Forwards `listen` to `upstream` through its toxics while enabled."""

    def __init__(
        self,
        name: str,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        upstream_text: str,
    ) -> None:
        self.name = name
        host, port = listen
        self.listen_address = ("127.0.0.1" if host == "localhost" else host, port)
        self.upstream_address = upstream
        self.upstream = upstream_text
        self.toxics: dict[str, Toxic] = {}
        self.connections: set[Connection] = set()
        self.server: asyncio.AbstractServer | None = None
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self.enable_at: float | None = None  # a timed disable ends then
        self._enabling: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        return self.server is not None

    @property
    def listen(self) -> str:
        return format_address(*self.listen_address)

    async def start(self) -> None:
        """Listen (a port 0 becomes the port the system gave)."""
        if self.server is not None:
            return
        host, port = self.listen_address
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(
                lambda: Connection(self).client,
                host,
                port,
                reuse_address=True,
                backlog=LISTEN_BACKLOG,
            )
        except OSError as error:
            raise ApiError(
                500, f"proxy {self.name}: cannot listen on {self.listen}: {error}"
            ) from None
        bound = self.server.sockets[0].getsockname()
        self.listen_address = (host, bound[1])
        logger.info("proxy %s: %s -> %s", self.name, self.listen, self.upstream)

    async def stop(self) -> None:
        """Stop listening and close every connection (the proxy is "down")."""
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for connection in list(self.connections):
            connection.close()

    def add_toxic(self, toxic: Toxic) -> None:
        """Add `toxic` (409 if its name is taken) to new and live connections."""
        if toxic.name in self.toxics:
            raise conflict("toxic")
        self._put(toxic)

    def replace_toxic(self, toxic: Toxic) -> None:
        """Put `toxic` in place of the toxic of the same name."""
        self.get_toxic(toxic.name)
        self._put(toxic)

    def get_toxic(self, name: str) -> Toxic:
        try:
            return self.toxics[name]
        except KeyError:
            raise not_found("toxic") from None

    def remove_toxic(self, name: str) -> None:
        """Remove the toxic `name` (404 if there is none) from every connection."""
        self.get_toxic(name)
        del self.toxics[name]
        self._forget_expiry(name)
        self._refresh()

    def remove_all_toxics(self) -> None:
        for name in list(self.toxics):
            self.remove_toxic(name)

    def enable_later(self, at: float, enable: Callable[[], None]) -> None:
        """Call `enable` at Unix time `at` (a timed disable); replaces an earlier one."""
        self.cancel_enable()
        self.enable_at = at
        delay = max(0.0, at - time.time())
        self._enabling = asyncio.get_running_loop().call_later(delay, enable)

    def cancel_enable(self) -> None:
        """Forget a pending timed enable."""
        if self._enabling is not None:
            self._enabling.cancel()
        self._enabling = None
        self.enable_at = None

    def to_json(self) -> dict[str, Any]:
        shown = {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [toxic.to_json() for toxic in self.toxics.values()],
        }
        if self.enable_at is not None and not self.enabled:
            shown["enable_at"] = self.enable_at
            shown["ttl"] = round(max(0.0, self.enable_at - time.time()), 3)
        return shown

    def _put(self, toxic: Toxic) -> None:
        self.toxics[toxic.name] = toxic
        self._forget_expiry(toxic.name)
        if toxic.expires_at is not None:
            delay = max(0.0, toxic.expires_at - time.time())
            handle = asyncio.get_running_loop().call_later(
                delay, self._expire, toxic.name, toxic.uid
            )
            self._expiries[toxic.name] = handle
        self._refresh()

    def _expire(self, name: str, uid: int) -> None:
        toxic = self.toxics.get(name)
        if toxic is not None and toxic.uid == uid:
            logger.info("proxy %s: toxic %s expired, removed", self.name, name)
            self.remove_toxic(name)

    def _forget_expiry(self, name: str) -> None:
        handle = self._expiries.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _refresh(self) -> None:
        toxics = list(self.toxics.values())
        for connection in list(self.connections):
            connection.apply_toxics(toxics)
