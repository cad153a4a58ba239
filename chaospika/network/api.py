"""Toxiproxy's HTTP API (same paths, JSON and status codes) on aiohttp.

Like Toxiproxy, it refuses browsers (a ``Mozilla/`` user agent gets 403), so a
web page cannot drive the proxies of a developer's machine.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from chaospika.network.collection import ProxyCollection
from chaospika.network.errors import ApiError, bad_request
from chaospika.network.toxics import parse_toxic, updated_toxic

__all__ = ["make_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COLLECTION = web.AppKey("collection", ProxyCollection)


def make_app(collection: ProxyCollection, version: str) -> web.Application:
    """The API application over `collection`."""
    app = web.Application(middlewares=[_errors])
    app[COLLECTION] = collection

    async def show_version(request: web.Request) -> web.Response:
        return web.json_response({"version": version})

    app.router.add_get("/version", show_version)
    app.router.add_post("/reset", reset)
    app.router.add_post("/populate", populate)
    app.router.add_get("/proxies", list_proxies)
    app.router.add_post("/proxies", create_proxy)
    app.router.add_get("/proxies/{proxy}", show_proxy)
    app.router.add_post("/proxies/{proxy}", update_proxy)
    app.router.add_patch("/proxies/{proxy}", update_proxy)
    app.router.add_delete("/proxies/{proxy}", delete_proxy)
    app.router.add_get("/proxies/{proxy}/toxics", list_toxics)
    app.router.add_post("/proxies/{proxy}/toxics", create_toxic)
    app.router.add_get("/proxies/{proxy}/toxics/{toxic}", show_toxic)
    app.router.add_post("/proxies/{proxy}/toxics/{toxic}", update_toxic)
    app.router.add_patch("/proxies/{proxy}/toxics/{toxic}", update_toxic)
    app.router.add_delete("/proxies/{proxy}/toxics/{toxic}", delete_toxic)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        return web.Response(status=403, text="User agent not allowed\n")
    try:
        return await handler(request)
    except ApiError as error:
        return web.json_response(error.to_json(), status=error.status)


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise bad_request(f"bad request body: {error}") from None


def _proxies(request: web.Request) -> ProxyCollection:
    return request.app[COLLECTION]


def _no_content() -> web.Response:
    return web.Response(status=204)


async def reset(request: web.Request) -> web.Response:
    await _proxies(request).reset()
    return _no_content()


async def populate(request: web.Request) -> web.Response:
    proxies = await _proxies(request).populate(await _body(request))
    shown = [proxy.to_json() for proxy in proxies]
    return web.json_response({"proxies": shown}, status=201)


async def list_proxies(request: web.Request) -> web.Response:
    proxies = _proxies(request).proxies
    return web.json_response({name: p.to_json() for name, p in proxies.items()})


async def create_proxy(request: web.Request) -> web.Response:
    proxy = await _proxies(request).create(await _body(request))
    return web.json_response(proxy.to_json(), status=201)


async def show_proxy(request: web.Request) -> web.Response:
    proxy = _proxies(request).get(request.match_info["proxy"])
    return web.json_response(proxy.to_json())


async def update_proxy(request: web.Request) -> web.Response:
    body = await _body(request)
    proxy = await _proxies(request).update(request.match_info["proxy"], body)
    return web.json_response(proxy.to_json())


async def delete_proxy(request: web.Request) -> web.Response:
    await _proxies(request).remove(request.match_info["proxy"])
    return _no_content()


async def list_toxics(request: web.Request) -> web.Response:
    proxy = _proxies(request).get(request.match_info["proxy"])
    return web.json_response([toxic.to_json() for toxic in proxy.toxics.values()])


async def create_toxic(request: web.Request) -> web.Response:
    proxy = _proxies(request).get(request.match_info["proxy"])
    toxic = parse_toxic(await _body(request))
    proxy.add_toxic(toxic)
    return web.json_response(toxic.to_json())  # 200, as Toxiproxy answers


async def show_toxic(request: web.Request) -> web.Response:
    proxy = _proxies(request).get(request.match_info["proxy"])
    return web.json_response(proxy.get_toxic(request.match_info["toxic"]).to_json())


async def update_toxic(request: web.Request) -> web.Response:
    proxy = _proxies(request).get(request.match_info["proxy"])
    toxic = proxy.get_toxic(request.match_info["toxic"])
    changed = updated_toxic(toxic, await _body(request))
    proxy.replace_toxic(changed)
    return web.json_response(changed.to_json())


async def delete_toxic(request: web.Request) -> web.Response:
    proxy = _proxies(request).get(request.match_info["proxy"])
    proxy.remove_toxic(request.match_info["toxic"])
    return _no_content()
