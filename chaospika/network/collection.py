"""The proxies of one server, changed one request at a time."""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from chaospika.network.addresses import DEFAULT_ALLOW_HOSTS, checked_address
from chaospika.network.errors import ApiError, bad_request, conflict, not_found
from chaospika.network.proxy import Proxy
from chaospika.network.toxics import parse_expiry

__all__ = ["ProxyCollection"]

logger = logging.getLogger("chaospika.network")
EXPIRY_FIELDS = ("ttl", "expires_at")


class ProxyCollection:
    """Proxies by name; only addresses in `allow_hosts` are listened on or dialled."""

    def __init__(self, allow_hosts: tuple[str, ...] = DEFAULT_ALLOW_HOSTS) -> None:
        self.allow_hosts = allow_hosts
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[None]] = set()

    def get(self, name: str) -> Proxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise not_found("proxy") from None

    async def create(self, body: Any) -> Proxy:
        """Create (and start, unless ``enabled`` is false) the proxy in `body`."""
        async with self.lock:
            proxy, enabled = self._parse(body)
            if proxy.name in self.proxies:
                raise conflict("proxy")
            return await self._add(proxy, enabled)

    async def update(self, name: str, body: Any) -> Proxy:
        """Change listen, upstream and/or enabled of the proxy `name`.

        A disable may carry ``ttl`` (seconds, or "30s") or ``expires_at`` (Unix
        time): the proxy is enabled again by itself at that time. Any later
        change of the proxy, a reset or its removal cancels that.
        """
        async with self.lock:
            proxy = self.get(name)
            if not isinstance(body, dict):
                raise bad_request("bad request body: a proxy must be a JSON object")
            timed = any(body.get(key) is not None for key in EXPIRY_FIELDS)
            if timed and body.get("enabled") is not False:
                raise bad_request(
                    'bad request body: ttl/expires_at go with "enabled": false '
                    "(a disable that ends by itself)"
                )
            enable_at = parse_expiry(body, None) if timed else None
            merged = {
                "name": name,
                "listen": proxy.listen,
                "upstream": proxy.upstream,
                "enabled": proxy.enabled,
                **{
                    key: value
                    for key, value in body.items()
                    if key not in EXPIRY_FIELDS
                },
            }
            changed, enabled = self._parse(merged)
            moved = (changed.listen_address, changed.upstream_address) != (
                proxy.listen_address,
                proxy.upstream_address,
            )
            if moved:
                await proxy.stop()
                proxy.listen_address = changed.listen_address
                proxy.upstream_address = changed.upstream_address
                proxy.upstream = changed.upstream
            proxy.cancel_enable()
            if enabled:
                await proxy.start()
            else:
                await proxy.stop()
                if enable_at is not None:
                    proxy.enable_later(enable_at, self._enable_callback(proxy))
            return proxy

    def _enable_callback(self, proxy: Proxy) -> Callable[[], None]:
        def enable() -> None:
            task = asyncio.ensure_future(self._timed_enable(proxy))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return enable

    async def _timed_enable(self, proxy: Proxy) -> None:
        """End a timed disable: start `proxy` unless it changed or went meanwhile."""
        async with self.lock:
            if self.proxies.get(proxy.name) is not proxy or proxy.enable_at is None:
                return
            proxy.cancel_enable()
            try:
                await proxy.start()
            except ApiError as error:
                logger.error("proxy %s: timed enable failed: %s", proxy.name, error)
                return
            logger.info("proxy %s: disable expired, enabled again", proxy.name)

    async def remove(self, name: str) -> None:
        async with self.lock:
            proxy = self.get(name)
            proxy.cancel_enable()
            await proxy.stop()
            proxy.remove_all_toxics()
            del self.proxies[name]

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        async with self.lock:
            for proxy in self.proxies.values():
                proxy.cancel_enable()
                proxy.remove_all_toxics()
                await proxy.start()

    async def populate(self, body: Any) -> list[Proxy]:
        """Create or replace the proxies of a list (all checked before any change)."""
        if not isinstance(body, list):
            raise bad_request("bad request body: populate takes a JSON list of proxies")
        async with self.lock:
            wanted = [self._parse(entry) for entry in body]
            done = []
            for proxy, enabled in wanted:
                existing = self.proxies.get(proxy.name)
                same = existing is not None and (
                    existing.listen_address,
                    existing.upstream_address,
                ) == (proxy.listen_address, proxy.upstream_address)
                if existing is not None and not same:
                    existing.cancel_enable()
                    await existing.stop()
                    existing.remove_all_toxics()
                    del self.proxies[proxy.name]
                    existing = None
                if existing is None:
                    done.append(await self._add(proxy, enabled))
                else:
                    done.append(existing)
            return done

    async def close(self) -> None:
        async with self.lock:
            for proxy in self.proxies.values():
                proxy.cancel_enable()
                proxy.remove_all_toxics()
                await proxy.stop()
            self.proxies.clear()

    async def _add(self, proxy: Proxy, enabled: bool) -> Proxy:
        if enabled:
            await proxy.start()
        self.proxies[proxy.name] = proxy
        return proxy

    def _parse(self, body: Any) -> tuple[Proxy, bool]:
        if not isinstance(body, dict):
            raise bad_request("bad request body: a proxy must be a JSON object")
        name, upstream = body.get("name"), body.get("upstream")
        if not isinstance(name, str) or not name:
            raise bad_request("missing required field: name")
        if not isinstance(upstream, str) or not upstream:
            raise bad_request("missing required field: upstream")
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise bad_request(
                f"bad request body: enabled must be true or false: {enabled!r}"
            )
        listen = body.get("listen") or "127.0.0.1:0"
        return (
            Proxy(
                name,
                checked_address("listen", listen, self.allow_hosts),
                checked_address("upstream", upstream, self.allow_hosts, upstream=True),
                upstream,
            ),
            enabled,
        )
