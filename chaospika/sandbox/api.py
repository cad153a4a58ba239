"""The sandbox's order API (aiohttp + redis.asyncio) and its WebSocket feed.

Run it with ``python -m chaospika.sandbox.api --port P --redis-url URL --db-url URL``.
"""

import argparse
import asyncio
import json
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from chaospika._clients import sql_engine
from chaospika.sandbox import schema
from chaospika.sandbox.bugs import OVERSELL, parse_bugs

__all__ = ["ORDER_SCRIPT", "create_app", "main", "serve"]

logger = logging.getLogger("chaospika.sandbox.api")

MAX_ID_LENGTH = 64
MAX_KEY_LENGTH = 128
MAX_STOCK = 10**9

# KEYS: stock key, idempotency key, stream.
# ARGV: order_id, product_id, user_id, idempotency_key, accepted_at, idem TTL (s).
ORDER_SCRIPT = """
local known = redis.call('GET', KEYS[2])
if known then return {'duplicate', known, ''} end
local stock = tonumber(redis.call('GET', KEYS[1]) or '')
if stock == nil then return {'unknown', '', ''} end
if stock <= 0 then return {'sold_out', '', ''} end
redis.call('DECR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[6]))
local stream_id = redis.call('XADD', KEYS[3], '*', 'order_id', ARGV[1],
    'product_id', ARGV[2], 'user_id', ARGV[3], 'idempotency_key', ARGV[4],
    'accepted_at', ARGV[5])
return {'accepted', ARGV[1], stream_id}
"""

REDIS_KEY = web.AppKey("redis", aioredis.Redis)
ENGINE_KEY = web.AppKey("engine", Engine)
FEED_KEY = web.AppKey("feed", object)
BUGS_KEY = web.AppKey("bugs", tuple)
SCRIPT_KEY = web.AppKey("order_script", object)

UNAVAILABLE = (RedisError, OSError, asyncio.TimeoutError)


class BadRequest(ValueError):
    """A request or WebSocket message the API refuses, with the reason."""


def error_response(status: int, label: str, error: Any) -> web.Response:
    """Return a JSON error body {"status": label, "error": text}."""
    text = str(error) or type(error).__name__
    return web.json_response({"status": label, "error": text}, status=status)


def check_id(name: str, value: Any, max_length: int = MAX_ID_LENGTH) -> str:
    """Return `value` if it is a non-empty string of at most `max_length` characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise BadRequest(
            f"'{name}' must be a non-empty string of at most {max_length} characters"
        )
    return value


async def read_object(request: web.Request) -> dict:
    """Return the request's JSON object body; BadRequest if it is not one."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


class Feed:
    """Fans messages of the Redis channels ws:* out to the local WebSockets joined."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.channels: dict[str, set[web.WebSocketResponse]] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self.subscribed = asyncio.Event()

    def join(self, channel: str, socket: web.WebSocketResponse) -> None:
        """Deliver the messages of `channel` to `socket` from now on."""
        self.channels.setdefault(channel, set()).add(socket)

    def leave(self, channel: str, socket: web.WebSocketResponse) -> None:
        """Stop delivering `channel` to `socket`."""
        members = self.channels.get(channel)
        if members is not None:
            members.discard(socket)
            if not members:
                del self.channels[channel]

    async def run(self) -> None:
        """Read ws:* from Redis until cancelled, reconnecting with a bounded backoff."""
        backoff = 0.1
        while True:
            client = aioredis.Redis.from_url(
                self.redis_url, decode_responses=True, socket_connect_timeout=2
            )
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(schema.ws_channel("*"))
                    self.subscribed.set()
                    backoff = 0.1
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None:
                            await self.deliver(message)
            except UNAVAILABLE as error:
                self.subscribed.clear()
                logger.warning("feed: Redis unavailable (%s); retrying", error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                await client.aclose()

    async def deliver(self, message: dict) -> None:
        """Send one pub/sub message to the sockets joined to its channel."""
        channel = message["channel"][len(schema.ws_channel("")) :]
        sockets = list(self.channels.get(channel, ()))
        if not sockets:
            return
        try:
            data = json.loads(message["data"])
        except (TypeError, json.JSONDecodeError):
            logger.warning("feed: dropped a malformed message on %s", channel)
            return
        data["server_at"] = time.time() * 1000.0
        text = json.dumps(data)
        await asyncio.gather(
            *(socket.send_str(text) for socket in sockets), return_exceptions=True
        )

    async def close_all(self) -> None:
        """Close every open WebSocket (at shutdown)."""
        for socket in list(self.sockets):
            await socket.close(code=1001, message=b"server shutdown")


async def health(request: web.Request) -> web.Response:
    """GET /health: 200 when Redis answers PING, else 503."""
    try:
        await asyncio.wait_for(request.app[REDIS_KEY].ping(), 2.0)
    except UNAVAILABLE as error:
        return web.json_response(
            {"status": "degraded", "error": str(error) or type(error).__name__},
            status=503,
        )
    return web.json_response({"status": "ok"})


async def place_order_atomic(
    request: web.Request, product_id: str, user_id: str, key: str
) -> tuple[str, str, str]:
    """Run the one Lua script: idempotency, stock check, DECR, SET, XADD."""
    order_id = uuid.uuid4().hex
    result = await request.app[SCRIPT_KEY](
        keys=[schema.stock_key(product_id), schema.idem_key(key), schema.STREAM],
        args=[
            order_id,
            product_id,
            user_id,
            key,
            repr(time.time()),
            schema.IDEM_TTL_SECONDS,
        ],
    )
    return result[0], result[1], result[2]


async def place_order_racy(
    request: web.Request, product_id: str, user_id: str, key: str
) -> tuple[str, str, str]:
    """Seeded bug `oversell`: read the stock, check it, later write back one less.

    A read-modify-write in separate round trips: two orders that overlap both
    read the same stock and both write the same value, so one decrement is lost
    and the sale accepts more orders than it had stock.
    """
    client = request.app[REDIS_KEY]
    known = await client.get(schema.idem_key(key))
    if known:
        return "duplicate", known, ""
    stock = await client.get(schema.stock_key(product_id))
    if stock is None:
        return "unknown", "", ""
    if int(stock) <= 0:
        return "sold_out", "", ""
    order_id = uuid.uuid4().hex
    await client.set(schema.idem_key(key), order_id, ex=schema.IDEM_TTL_SECONDS)
    await client.set(schema.stock_key(product_id), int(stock) - 1)
    stream_id = await client.xadd(
        schema.STREAM,
        {
            "order_id": order_id,
            "product_id": product_id,
            "user_id": user_id,
            "idempotency_key": key,
            "accepted_at": repr(time.time()),
        },
    )
    return "accepted", order_id, stream_id


async def create_order(request: web.Request) -> web.Response:
    """POST /orders: accept an order into the stream, at most once per key."""
    key = request.headers.get("Idempotency-Key", "")
    try:
        check_id("Idempotency-Key header", key, MAX_KEY_LENGTH)
        body = await read_object(request)
        product_id = check_id("product_id", body.get("product_id"))
        user_id = check_id("user_id", body.get("user_id"))
    except BadRequest as error:
        return error_response(400, "bad_request", error)
    place = (
        place_order_racy if OVERSELL in request.app[BUGS_KEY] else place_order_atomic
    )
    try:
        outcome, order_id, stream_id = await place(request, product_id, user_id, key)
    except UNAVAILABLE as error:
        return error_response(503, "unavailable", error)
    if outcome == "unknown":
        return error_response(404, "unknown_product", f"no product {product_id!r}")
    if outcome == "sold_out":
        return web.json_response({"status": "sold_out"}, status=409)
    if outcome == "duplicate":
        return web.json_response(
            {"order_id": order_id, "status": "accepted", "replayed": True}
        )
    return web.json_response(
        {"order_id": order_id, "status": "accepted", "stream_id": stream_id},
        status=202,
    )


async def stream_backlog(client: aioredis.Redis) -> tuple[int, int]:
    """Return (pending, lag) of the consumer group; (0, 0) if there is no stream."""
    try:
        groups = await client.xinfo_groups(schema.STREAM)
    except ResponseError as error:
        if "no such key" in str(error).lower():
            return 0, 0
        raise
    for group in groups:
        if group["name"] != schema.GROUP:
            continue
        lag = group.get("lag")
        if lag is None:
            info = await client.xinfo_stream(schema.STREAM)
            last = info["last-generated-id"]
            lag = 0 if group["last-delivered-id"] == last else 1
        return int(group["pending"]), int(lag)
    return 0, 0


async def init_product(request: web.Request) -> web.Response:
    """POST /products/{product_id}/init: set the stock in Redis and SQL."""
    try:
        product_id = check_id("product_id", request.match_info["product_id"])
        body = await read_object(request)
        stock = body.get("stock")
        if not isinstance(stock, int) or isinstance(stock, bool):
            raise BadRequest(f"'stock' must be an integer >= 0, got {stock!r}")
        if not 0 <= stock <= MAX_STOCK:
            raise BadRequest(f"'stock' must be between 0 and {MAX_STOCK}, got {stock}")
    except BadRequest as error:
        return error_response(400, "bad_request", error)
    client = request.app[REDIS_KEY]
    try:
        pending, lag = await stream_backlog(client)
        if pending or lag:
            return web.json_response(
                {
                    "status": "busy",
                    "error": "the worker has not drained the stream yet",
                    "pending": pending,
                    "lag": lag,
                },
                status=409,
            )
        engine = request.app[ENGINE_KEY]
        await asyncio.to_thread(init_product_rows, engine, product_id, stock)
        await client.set(schema.stock_key(product_id), stock)
    except (SQLAlchemyError, *UNAVAILABLE) as error:
        return error_response(503, "unavailable", error)
    return web.json_response({"product_id": product_id, "stock": stock})


def init_product_rows(engine: Engine, product_id: str, stock: int) -> None:
    """Reset the SQL product row and delete its orders, in one transaction."""
    with engine.begin() as conn:
        schema.init_product(conn, schema.make_tables(), product_id, stock)


async def get_stock(request: web.Request) -> web.Response:
    """GET /products/{product_id}/stock: the Redis counter."""
    product_id = request.match_info["product_id"]
    try:
        stock = await request.app[REDIS_KEY].get(schema.stock_key(product_id))
    except UNAVAILABLE as error:
        return error_response(503, "unavailable", error)
    if stock is None:
        return error_response(404, "unknown_product", f"no product {product_id!r}")
    return web.json_response({"product_id": product_id, "stock": int(stock)})


def check_channel(data: dict) -> str:
    """Return the message's channel name; BadRequest if missing or too long."""
    return check_id("channel", data.get("channel"), MAX_KEY_LENGTH)


async def handle_ws_message(
    app: web.Application, socket: web.WebSocketResponse, joined: set, data: Any
) -> dict | None:
    """Act on one client message; return the reply to send, if any."""
    if not isinstance(data, dict):
        raise BadRequest("a message must be a JSON object")
    feed = app[FEED_KEY]
    kind = data.get("type")
    if kind == "join":
        channel = check_channel(data)
        await asyncio.wait_for(feed.subscribed.wait(), 5.0)
        feed.join(channel, socket)
        joined.add(channel)
        return {"type": "joined", "channel": channel}
    if kind == "leave":
        channel = check_channel(data)
        feed.leave(channel, socket)
        joined.discard(channel)
        return {"type": "left", "channel": channel}
    if kind == "message":
        channel = check_channel(data)
        sent_at = data.get("sent_at")
        if not isinstance(sent_at, int | float) or isinstance(sent_at, bool):
            raise BadRequest("'sent_at' must be a number (epoch milliseconds)")
        outgoing = {
            "type": "message",
            "channel": channel,
            "payload": data.get("payload"),
            "sent_at": sent_at,
        }
        await app[REDIS_KEY].publish(schema.ws_channel(channel), json.dumps(outgoing))
        return None
    raise BadRequest(f"unknown message type {kind!r}; expected join, leave or message")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: join channels and broadcast messages to every joined client."""
    socket = web.WebSocketResponse(heartbeat=30.0)
    await socket.prepare(request)
    feed = request.app[FEED_KEY]
    feed.sockets.add(socket)
    joined: set[str] = set()
    try:
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(message.data)
            except json.JSONDecodeError:
                data = None
            try:
                reply = await handle_ws_message(request.app, socket, joined, data)
            except (BadRequest, *UNAVAILABLE) as error:
                reply = {"type": "error", "error": str(error) or type(error).__name__}
            if reply is not None:
                await socket.send_json(reply)
    finally:
        for channel in joined:
            feed.leave(channel, socket)
        feed.sockets.discard(socket)
    return socket


def create_app(
    redis_url: str, db_url: str, bugs: tuple[str, ...] = ()
) -> web.Application:
    """Return the API application for `redis_url` and `db_url` with `bugs` on."""
    app = web.Application()
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_url,
        max_connections=256,
        timeout=5,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=3,
    )
    client = aioredis.Redis(connection_pool=pool)
    app[REDIS_KEY] = client
    app[SCRIPT_KEY] = client.register_script(ORDER_SCRIPT)
    app[ENGINE_KEY] = sql_engine(db_url)
    app[FEED_KEY] = Feed(redis_url)
    app[BUGS_KEY] = tuple(bugs)
    app.router.add_get("/health", health)
    app.router.add_post("/orders", create_order)
    app.router.add_post("/products/{product_id}/init", init_product)
    app.router.add_get("/products/{product_id}/stock", get_stock)
    app.router.add_get("/ws", websocket)

    async def start_feed(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(app[FEED_KEY].run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await app[REDIS_KEY].aclose()
        await pool.aclose()
        app[ENGINE_KEY].dispose()

    async def close_sockets(app: web.Application) -> None:
        await app[FEED_KEY].close_all()

    app.cleanup_ctx.append(start_feed)
    app.on_shutdown.append(close_sockets)
    return app


async def serve(host: str, port: int, app: web.Application) -> None:
    """Serve `app` on host:port until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logger.info("order API listening on http://%s:%d", host, port)
    try:
        await stop.wait()
    finally:
        logger.info("order API stopping")
        await runner.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the API's command line."""
    parser = argparse.ArgumentParser(prog="python -m chaospika.sandbox.api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8731)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6391/0")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--bugs", default="", help="comma-separated seeded bugs")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        args.bugs = parse_bugs(args.bugs)
    except ValueError as error:
        parser.error(str(error))
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the order API (uvloop if installed)."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(args.redis_url, args.db_url, args.bugs)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, app))
    else:
        uvloop.run(serve(args.host, args.port, app))


if __name__ == "__main__":
    main()
