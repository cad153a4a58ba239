"""A small synchronous client of the proxy API, for activities and ledger undos.

Removals are idempotent (a toxic or proxy already gone is success), so the
fault ledger can call them twice: record a toxic with
``{"module": "chaospika.network.client", "func": "remove_toxic",
"args": {"api_url": ..., "proxy": ..., "toxic": ...}}`` as its undo.
"""

import json
import urllib.error
import urllib.request
from typing import Any

from chaoslib.exceptions import ActivityFailed

__all__ = [
    "add_toxic",
    "create_proxy",
    "delete_proxy",
    "list_toxics",
    "remove_toxic",
    "request",
    "reset",
]


def request(
    api_url: str, method: str, path: str, body: Any = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """(status, decoded JSON or None) of one API call; raises if unreachable."""
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(
        api_url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "User-Agent": "chaospika"},
    )
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except OSError as error:
        raise ActivityFailed(f"proxy API {api_url} unreachable: {error}") from None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def _expect(status: int, answer: Any, ok: tuple[int, ...], what: str) -> Any:
    if status not in ok:
        detail = answer.get("error") if isinstance(answer, dict) else answer
        raise ActivityFailed(f"proxy API: {what} failed ({status}): {detail}")
    return answer


def create_proxy(
    api_url: str, name: str, upstream: str, listen: str = "127.0.0.1:0"
) -> dict[str, Any]:
    """Create a proxy; return it (``listen`` holds the real port)."""
    body = {"name": name, "upstream": upstream, "listen": listen, "enabled": True}
    status, answer = request(api_url, "POST", "/proxies", body)
    return _expect(status, answer, (201,), f"create proxy {name}")


def delete_proxy(api_url: str, name: str) -> dict[str, Any]:
    """Delete a proxy; `already` is true when there was none."""
    status, answer = request(api_url, "DELETE", f"/proxies/{name}")
    _expect(status, answer, (204, 404), f"delete proxy {name}")
    return {"proxy": name, "deleted": True, "already": status == 404}


def add_toxic(api_url: str, proxy: str, toxic: dict[str, Any]) -> dict[str, Any]:
    """Add a toxic (Toxiproxy's JSON, plus optional ``ttl``); return it."""
    status, answer = request(api_url, "POST", f"/proxies/{proxy}/toxics", toxic)
    return _expect(status, answer, (200, 201), f"add toxic to {proxy}")


def remove_toxic(api_url: str, proxy: str, toxic: str) -> dict[str, Any]:
    """Remove a toxic; `already` is true when it was gone (expired, reset, removed)."""
    status, answer = request(api_url, "DELETE", f"/proxies/{proxy}/toxics/{toxic}")
    _expect(status, answer, (204, 404), f"remove toxic {toxic} of {proxy}")
    return {"proxy": proxy, "toxic": toxic, "removed": True, "already": status == 404}


def list_toxics(api_url: str, proxy: str) -> list[dict[str, Any]]:
    status, answer = request(api_url, "GET", f"/proxies/{proxy}/toxics")
    return _expect(status, answer, (200,), f"list toxics of {proxy}")


def reset(api_url: str) -> None:
    """Enable every proxy and remove every toxic."""
    status, answer = request(api_url, "POST", "/reset")
    _expect(status, answer, (204,), "reset")
