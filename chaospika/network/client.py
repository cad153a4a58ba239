"""A small synchronous client of the proxy API, for activities and ledger undos.

It speaks Toxiproxy's HTTP API, so it drives our proxy (`chaospika.network.server`)
and a real Toxiproxy server alike. Removals are idempotent (a toxic or proxy
already gone is success) and raise `ActivityFailed` when they really failed, so
the fault ledger can call them twice: a toxic is recorded with
``{"module": "chaospika.network.client", "func": "remove_toxic",
"args": {"proxy_url": ..., "proxy": ..., "toxic": ...}}`` as its undo, a
disabled proxy with ``enable_proxy``.
"""

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from chaoslib.exceptions import ActivityFailed

from chaospika._secrets import redact_url

__all__ = [
    "add_toxic",
    "create_proxy",
    "delete_proxy",
    "disable_proxy",
    "enable_proxy",
    "get_proxy",
    "get_toxic",
    "list_toxics",
    "remove_toxic",
    "request",
    "reset",
]

# Never through an HTTP proxy of the environment: the API is on loopback.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _part(name: str) -> str:
    """`name` as one path segment."""
    return quote(str(name), safe="")


def request(
    proxy_url: str, method: str, path: str, body: Any = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """(status, decoded JSON or None) of one API call; raises if unreachable."""
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(
        proxy_url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "User-Agent": "chaospika"},
    )
    try:
        with _opener.open(call, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (OSError, ValueError) as error:
        shown = redact_url(proxy_url)
        raise ActivityFailed(f"proxy API {shown} unreachable: {error}") from None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def error_text(answer: Any) -> str:
    """The error message of an API answer (Toxiproxy's ``{"error": ...}``)."""
    if isinstance(answer, dict) and "error" in answer:
        return str(answer["error"])
    return str(answer)


def _expect(status: int, answer: Any, ok: tuple[int, ...], what: str) -> Any:
    if status not in ok:
        raise ActivityFailed(
            f"proxy API: {what} failed ({status}): {error_text(answer)}"
        )
    return answer


def create_proxy(
    proxy_url: str, name: str, upstream: str, listen: str = "127.0.0.1:0"
) -> dict[str, Any]:
    """Create a proxy; return it (``listen`` holds the real port)."""
    body = {"name": name, "upstream": upstream, "listen": listen, "enabled": True}
    status, answer = request(proxy_url, "POST", "/proxies", body)
    return _expect(status, answer, (201,), f"create proxy {name}")


def get_proxy(proxy_url: str, name: str) -> dict[str, Any] | None:
    """The proxy `name` as the API shows it, None if there is none."""
    status, answer = request(proxy_url, "GET", f"/proxies/{_part(name)}")
    if status == 404:
        return None
    return _expect(status, answer, (200,), f"show proxy {name}")


def delete_proxy(proxy_url: str, name: str) -> dict[str, Any]:
    """Delete a proxy; `already` is true when there was none."""
    status, answer = request(proxy_url, "DELETE", f"/proxies/{_part(name)}")
    _expect(status, answer, (204, 404), f"delete proxy {name}")
    return {"proxy": name, "deleted": True, "already": status == 404}


def disable_proxy(
    proxy_url: str, proxy: str, ttl: float | None = None
) -> dict[str, Any]:
    """Disable a proxy (it stops listening, its connections close); return it.

    With `ttl` (seconds) our proxy enables it again by itself after that long
    and shows ``enable_at``; a Toxiproxy server ignores the field.
    """
    body: dict[str, Any] = {"enabled": False}
    if ttl is not None:
        body["ttl"] = ttl
    status, answer = request(proxy_url, "POST", f"/proxies/{_part(proxy)}", body)
    return _expect(status, answer, (200,), f"disable proxy {proxy}")


def enable_proxy(proxy_url: str, proxy: str) -> dict[str, Any]:
    """Enable a proxy again; a proxy that is gone counts as done (`already`)."""
    body = {"enabled": True}
    status, answer = request(proxy_url, "POST", f"/proxies/{_part(proxy)}", body)
    _expect(status, answer, (200, 404), f"enable proxy {proxy}")
    enabled = status == 200 and bool(isinstance(answer, dict) and answer["enabled"])
    if status == 200 and not enabled:
        raise ActivityFailed(f"proxy API: proxy {proxy} is still disabled")
    return {"proxy": proxy, "enabled": enabled, "already": status == 404}


def add_toxic(proxy_url: str, proxy: str, toxic: dict[str, Any]) -> dict[str, Any]:
    """Add a toxic (Toxiproxy's JSON, plus optional ``ttl``); return it."""
    path = f"/proxies/{_part(proxy)}/toxics"
    status, answer = request(proxy_url, "POST", path, toxic)
    return _expect(status, answer, (200, 201), f"add toxic to {proxy}")


def get_toxic(proxy_url: str, proxy: str, toxic: str) -> dict[str, Any] | None:
    """The toxic `toxic` of `proxy`, None if there is none (raises if no proxy)."""
    path = f"/proxies/{_part(proxy)}/toxics/{_part(toxic)}"
    status, answer = request(proxy_url, "GET", path)
    if status == 404 and "toxic" in error_text(answer):
        return None
    return _expect(status, answer, (200,), f"show toxic {toxic} of {proxy}")


def remove_toxic(proxy_url: str, proxy: str, toxic: str) -> dict[str, Any]:
    """Remove a toxic; `already` is true when it was gone (expired, reset, removed)."""
    path = f"/proxies/{_part(proxy)}/toxics/{_part(toxic)}"
    status, answer = request(proxy_url, "DELETE", path)
    _expect(status, answer, (204, 404), f"remove toxic {toxic} of {proxy}")
    return {"proxy": proxy, "toxic": toxic, "removed": True, "already": status == 404}


def list_toxics(proxy_url: str, proxy: str) -> list[dict[str, Any]]:
    """The toxics of `proxy` (raises if there is no such proxy)."""
    status, answer = request(proxy_url, "GET", f"/proxies/{_part(proxy)}/toxics")
    return _expect(status, answer, (200,), f"list toxics of {proxy}")


def reset(proxy_url: str) -> None:
    """Enable every proxy and remove every toxic."""
    status, answer = request(proxy_url, "POST", "/reset")
    _expect(status, answer, (204,), "reset")
