"""Service B's shop API: sells inventory units through Redis, one Lua script per sale.

Run it from the repository root with
``python -m tests.order_service_b.api --port P --redis-url URL --dsn POSTGRES_DSN``.
"""

import argparse
import asyncio
import logging
import time
import uuid

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from . import store

__all__ = ["inventory_key", "main", "make_app"]

log = logging.getLogger("order_service_b.api")

MAX_QUANTITY = 1_000_000
MAX_TEXT = 80

# KEYS: inventory counter, purchase stream. ARGV: ref, sku, buyer, placed at (ms).
SELL_ONE = """
local left = redis.call('GET', KEYS[1])
if not left then return 'unknown' end
if tonumber(left) <= 0 then return 'gone' end
redis.call('DECR', KEYS[1])
redis.call('XADD', KEYS[2], '*', 'purchase_ref', ARGV[1], 'sku', ARGV[2],
    'buyer', ARGV[3], 'placed_ms', ARGV[4])
return 'taken'
"""

CLIENT = web.AppKey("client", aioredis.Redis)
DSN = web.AppKey("dsn", str)
SELL = web.AppKey("sell", object)


def inventory_key(sku: str) -> str:
    """The Redis counter of units of `sku` still for sale."""
    return f"inv:{sku}:left"


def text_field(body: dict, name: str) -> str:
    """Return body[name] if it is a short non-empty string, else raise HTTPBadRequest."""
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise web.HTTPBadRequest(
            text=f'{{"error": "{name} must be a string of 1 to {MAX_TEXT} chars"}}',
            content_type="application/json",
        )
    return value


async def json_object(request: web.Request) -> dict:
    """The request's JSON object body (HTTPBadRequest otherwise)."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "expected a JSON object"}', content_type="application/json"
        )
    return body


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 while Redis answers, 503 otherwise."""
    try:
        await asyncio.wait_for(request.app[CLIENT].ping(), 1.0)
    except (TimeoutError, RedisError, OSError) as error:
        return web.json_response({"up": False, "why": str(error)}, status=503)
    return web.json_response({"up": True})


async def put_inventory(request: web.Request) -> web.Response:
    """PUT /v2/inventory/{sku} {"quantity": N}: open a sale of N units."""
    sku = request.match_info["sku"]
    body = await json_object(request)
    quantity = body.get("quantity")
    if (
        not isinstance(quantity, int)
        or isinstance(quantity, bool)
        or not 0 <= quantity <= MAX_QUANTITY
    ):
        return web.json_response(
            {"error": f"quantity must be an integer 0..{MAX_QUANTITY}"}, status=400
        )
    await asyncio.to_thread(store.open_inventory, request.app[DSN], sku, quantity)
    await request.app[CLIENT].set(inventory_key(sku), quantity)
    log.info("inventory of %s set to %d", sku, quantity)
    return web.json_response({"sku": sku, "quantity": quantity})


async def post_purchase(request: web.Request) -> web.Response:
    """POST /v2/purchases {"sku", "buyer"}: 201 {"id"}, 410 sold out, 404 unknown."""
    body = await json_object(request)
    sku = text_field(body, "sku")
    buyer = text_field(body, "buyer")
    ref = str(uuid.uuid4())
    try:
        outcome = await request.app[SELL](
            keys=[inventory_key(sku), store.STREAM],
            args=[ref, sku, buyer, str(int(time.time() * 1000))],
        )
    except (RedisError, OSError) as error:
        return web.json_response({"error": f"store unavailable: {error}"}, status=503)
    if outcome == "unknown":
        return web.json_response({"error": f"no inventory for {sku}"}, status=404)
    if outcome == "gone":
        return web.json_response({"error": "sold out"}, status=410)
    return web.json_response({"id": ref}, status=201)


def make_app(redis_url: str, dsn: str) -> web.Application:
    """The aiohttp application of service B's API."""
    app = web.Application()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    app[CLIENT] = client
    app[DSN] = dsn
    app[SELL] = client.register_script(SELL_ONE)

    async def close_client(app: web.Application) -> None:
        await app[CLIENT].aclose()

    app.on_cleanup.append(close_client)
    app.router.add_get("/healthz", healthz)
    app.router.add_put("/v2/inventory/{sku}", put_inventory)
    app.router.add_post("/v2/purchases", post_purchase)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the API on 127.0.0.1 until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.order_service_b.api")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--dsn", required=True, help="PostgreSQL conninfo or URL")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s api-b %(levelname)s %(message)s"
    )
    store.ensure_schema(args.dsn)
    web.run_app(
        make_app(args.redis_url, args.dsn),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
