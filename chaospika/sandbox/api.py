"""The sandbox's order API (aiohttp + redis.asyncio) and its WebSocket feed.

Run it with ``python -m chaospika.sandbox.api --port P --redis-url URL --db-url URL``.

Degraded mode: every Redis call is bounded. It fails when Redis has not
answered it within ``--redis-timeout`` (default 0.5 s) of the API's own
running time (time its event loop lagged behind, in a burst on a busy machine,
does not count), and within 10 times that (at least 5 s) of wall time in any
case. When Redis does not answer, the API answers 503 with ``Retry-After`` and,
for ``--redis-timeout`` after a failure, refuses at once without touching
Redis (a circuit breaker); then one request tries Redis again. ``/health``
says ``degraded`` (503) meanwhile and ``ok`` again once Redis answers. A
command is never sent twice: a call cut by its bound closes its connection,
and Redis drops a command still waiting (CLIENT PAUSE) when its client has
gone; a retry with the same Idempotency-Key is always safe.
"""

import argparse
import asyncio
import json
import logging
import math
import signal
import socket as _socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from chaospika._clients import sql_engine
from chaospika.sandbox import schema
from chaospika.sandbox.bugs import (
    NO_REDIS_TIMEOUT,
    OVERSELL,
    SLOW_SUBSCRIBER,
    STOCK_RESEED,
    parse_bugs,
)

__all__ = [
    "DEFAULT_REDIS_TIMEOUT",
    "ORDER_SCRIPT",
    "RedisGuard",
    "RedisUnavailable",
    "create_app",
    "main",
    "serve",
]

Result = TypeVar("Result")

logger = logging.getLogger("chaospika.sandbox.api")

MAX_ID_LENGTH = 64
MAX_KEY_LENGTH = 128
MAX_STOCK = 10**9
DEFAULT_REDIS_TIMEOUT = 0.5
CAP_FACTOR = 10  # wall-clock bound of a Redis call: this many timeouts (>= 5 s)
FEED_WAIT_FACTOR = 4
HEALTH_CHANNEL = "chaospika:health"
FEED_QUEUE_LIMIT = 1024  # feed messages waiting for one socket before it is cut off
FEED_SEND_TIMEOUT = 2.0  # one send to one socket may wait this long, then it is cut off
FEED_CLOSE_GRACE = 1.0  # a cut-off or shutdown close may take this long, then abort
SLOW_CONSUMER_CODE = 1008  # WebSocket close code of a cut-off client (policy)

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
GUARD_KEY = web.AppKey("guard", object)

UNAVAILABLE = (RedisError, OSError, asyncio.TimeoutError)


class BadRequest(ValueError):
    """A request or WebSocket message the API refuses, with the reason."""


class RedisUnavailable(Exception):
    """Redis did not answer in time, refused the connection, or the breaker is open."""


class LoopClock:
    """The API's own running time: wall time minus the time its event loop lagged.

    A ticker wakes every `period` s and adds how late it woke to `lag`. A burst
    of requests on a busy machine delays every callback (a Redis answer that
    has arrived is read late); waiting on Redis, by contrast, leaves the loop
    idle. Bounds measured on this clock cut a silent Redis, not a busy API.
    """

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.lag = 0.0
        self.due = time.monotonic() + period

    def lag_now(self) -> float:
        """Lag so far, including the ticker's current lateness."""
        return self.lag + max(0.0, time.monotonic() - self.due)

    def mark(self) -> tuple[float, float]:
        """A point in time to measure from: (monotonic, lag)."""
        return time.monotonic(), self.lag_now()

    def since(self, mark: tuple[float, float]) -> float:
        """Seconds of running time since `mark`."""
        return (time.monotonic() - mark[0]) - (self.lag_now() - mark[1])

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            self.due = time.monotonic() + self.period
            await asyncio.sleep(self.period)
            self.lag += max(0.0, time.monotonic() - self.due)
            self.due = time.monotonic() + self.period


class RedisGuard:
    """Bounds every Redis call and fails fast while Redis is unreachable.

    A call fails (RedisUnavailable) when Redis has not answered it within
    `timeout` s of the API's running time (see LoopClock), or within `cap` s
    of wall time. A call that fails to reach Redis (refused, reset, timed
    out) while no other call got an answer since it began opens the breaker:
    for `hold` s every call is refused at once; then one call (a trial) goes
    to Redis while the others are still refused; the first call answered
    closes the breaker. A `probe` (health) is never refused. With `timeout`
    None (the seeded bug `no-redis-timeout`) calls are unbounded and never
    refused.
    """

    def __init__(
        self,
        timeout: float | None,
        hold: float | None = None,
        clock: LoopClock | None = None,
    ) -> None:
        self.timeout = timeout
        self.cap = None if timeout is None else hard_cap(timeout)
        self.hold = timeout if hold is None else hold
        self.clock = clock or LoopClock()
        self.tick = None if timeout is None else max(0.01, timeout / 10)
        self.down_since: float | None = None  # epoch seconds
        self.error = ""
        self.retry_at = 0.0  # monotonic
        self.trial = False
        self.last_success = 0.0  # monotonic

    @property
    def enabled(self) -> bool:
        return self.timeout is not None

    @property
    def retry_after(self) -> int:
        """Seconds a client should wait before retrying (the Retry-After header)."""
        return max(1, math.ceil(self.hold or 0))

    def refusing(self) -> bool:
        """True while calls are refused without trying Redis."""
        if not self.enabled or self.down_since is None:
            return False
        return self.trial or time.monotonic() < self.retry_at

    def failed(self, error: BaseException, started: float = 0.0) -> None:
        """Record that a call begun at `started` failed to reach Redis.

        Opens the breaker unless another call reached Redis since then.
        """
        if self.last_success > started:
            return
        self.error = str(error) or type(error).__name__
        if self.down_since is None:
            self.down_since = time.time()
            logger.warning("Redis unreachable (%s): degraded mode", self.error)
        self.retry_at = time.monotonic() + (self.hold or 0)

    def succeeded(self) -> None:
        """Record that Redis answered; close the breaker."""
        self.last_success = time.monotonic()
        if self.down_since is not None:
            down = time.time() - self.down_since
            logger.info("Redis answers again after %.1f s: degraded mode over", down)
            self.down_since = None
            self.error = ""

    def state(self) -> dict:
        """What /health reports while degraded."""
        since = self.down_since
        return {
            "redis": "unreachable",
            "error": self.error or "Redis did not answer",
            "degraded_since": since,
            "degraded_seconds": None
            if since is None
            else round(time.time() - since, 3),
        }

    async def bounded(self, action: Callable[[], Awaitable[Result]]) -> Result:
        """Await `action()`; TimeoutError past `timeout` of running time or `cap`."""
        task = asyncio.ensure_future(action())
        mark = self.clock.mark()
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.tick)
                if done:
                    return task.result()
                ran = self.clock.since(mark)
                if ran > self.timeout or time.monotonic() - mark[0] > self.cap:
                    raise TimeoutError(f"no answer from Redis within {ran:.2f} s")
        finally:
            if not task.done():
                # Closes the command's connection: Redis drops a command still
                # waiting (CLIENT PAUSE) when its client has gone.
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def call(
        self, action: Callable[[], Awaitable[Result]], probe: bool = False
    ) -> Result:
        """Run `action()` (Redis commands) within the bounds; RedisUnavailable if not."""
        if not self.enabled:
            try:
                result = await action()
            except ResponseError:
                raise
            except UNAVAILABLE as error:
                raise RedisUnavailable(str(error) or type(error).__name__) from error
            return result
        if not probe and self.refusing():
            raise RedisUnavailable(f"Redis unreachable ({self.error}); not tried")
        trial = not probe and self.down_since is not None
        if trial:
            self.trial = True
        started = time.monotonic()
        try:
            result = await self.bounded(action)
        except ResponseError:
            self.succeeded()  # Redis answered, with an error
            raise
        except UNAVAILABLE as error:
            self.failed(error, started)
            raise RedisUnavailable(str(error) or type(error).__name__) from error
        finally:
            if trial:
                self.trial = False
        self.succeeded()
        return result


def hard_cap(timeout: float) -> float:
    """Wall-clock bound of a Redis call (and redis-py's own timeouts)."""
    return max(5.0, CAP_FACTOR * timeout)


def unavailable(request: web.Request, error: BaseException) -> web.Response:
    """503 {"status": "unavailable", "error"} with Retry-After."""
    response = error_response(503, "unavailable", error)
    response.headers["Retry-After"] = str(request.app[GUARD_KEY].retry_after)
    return response


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


def abort_transport(transport: Any) -> None:
    """Drop a connection at once: a reset, discarding whatever is still unsent."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:  # linger 0: the kernel resets instead of keeping the unsent bytes
            sock.setsockopt(
                _socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except (OSError, ValueError):
            pass
    transport.abort()


class Outbox:
    """One WebSocket's feed messages, sent in order by its own task.

    The feed only queues (it never waits for a socket). A socket that falls
    `queue_limit` messages behind, or whose send waits `send_timeout` s, is a
    slow consumer: it is cut off (closed with code 1008, then reset if its
    close does not go through within FEED_CLOSE_GRACE), so one slow client
    never delays the others.
    """

    def __init__(
        self, feed: "Feed", socket: web.WebSocketResponse, transport: Any
    ) -> None:
        self.feed = feed
        self.socket = socket
        self.transport = transport  # request.transport
        self.queue: asyncio.Queue[str] = asyncio.Queue(feed.queue_limit)
        self.cut = False
        self.task = asyncio.create_task(self.run())

    def offer(self, text: str) -> None:
        """Queue `text` for the socket, without waiting; cut it off if too far behind."""
        if self.cut:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.cut_off(f"{self.feed.queue_limit} messages behind")

    async def run(self) -> None:
        """Send the queued messages in order until cancelled or cut off."""
        while True:
            text = await self.queue.get()
            try:
                await asyncio.wait_for(
                    self.socket.send_str(text), self.feed.send_timeout
                )
            except TimeoutError:
                self.cut_off(f"a send waited {self.feed.send_timeout:g} s")
                return
            except (ConnectionError, RuntimeError):  # closing / closed socket
                return

    def cut_off(self, why: str) -> None:
        """Count the slow consumer, stop sending to it and disconnect it."""
        if self.cut:
            return
        self.cut = True
        self.feed.cut_off_count += 1
        logger.warning(
            "feed: cut off a slow WebSocket client (%s); %d cut off so far",
            why,
            self.feed.cut_off_count,
        )
        if self.task is not asyncio.current_task():
            self.task.cancel()
        self.feed.spawn(self.disconnect())

    async def disconnect(self) -> None:
        """Close with SLOW_CONSUMER_CODE; reset the connection if that stalls."""
        try:
            await asyncio.wait_for(
                self.socket.close(
                    code=SLOW_CONSUMER_CODE, message=b"slow consumer", drain=False
                ),
                FEED_CLOSE_GRACE,
            )
            loop = asyncio.get_running_loop()
            end = loop.time() + FEED_CLOSE_GRACE
            while (
                self.transport is not None
                and self.transport.get_write_buffer_size()
                and loop.time() < end
            ):
                await asyncio.sleep(0.05)
        except Exception as error:  # noqa: BLE001 - the reset below ends it anyway
            logger.debug("feed: closing a cut-off client failed: %r", error)
        finally:
            if self.transport is not None and self.transport.get_write_buffer_size():
                abort_transport(self.transport)


class Feed:
    """Fans messages of the Redis channels ws:* out to the local WebSockets joined.

    Each socket has its own Outbox (see there): delivering only queues, so a
    client that stops reading never delays the others, and is cut off. With
    `isolate` False (the seeded bug `slow-subscriber`) delivery awaits every
    joined socket's send, so one client that stops reading stalls them all.
    """

    def __init__(
        self,
        redis_url: str,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
        ping_every: float = 1.0,
        isolate: bool = True,
    ) -> None:
        self.redis_url = redis_url
        self.timeout = timeout
        self.ping_every = ping_every
        self.stale_after = ping_every + 2 * timeout
        self.join_wait = max(1.0, FEED_WAIT_FACTOR * timeout)
        self.channels: dict[str, set[web.WebSocketResponse]] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self.subscribed = asyncio.Event()
        self.reconnects = 0
        self.isolate = isolate
        self.queue_limit = FEED_QUEUE_LIMIT
        self.send_timeout = FEED_SEND_TIMEOUT
        self.outboxes: dict[web.WebSocketResponse, Outbox] = {}
        self.cut_off_count = 0  # slow consumers disconnected
        self.tasks: set[asyncio.Task] = set()

    def spawn(self, coroutine: Awaitable[None]) -> None:
        """Run `coroutine` as a task the feed keeps a reference to until it ends."""
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def add(self, socket: web.WebSocketResponse, transport: Any) -> None:
        """Register an open WebSocket (with its own Outbox unless the bug is on)."""
        self.sockets.add(socket)
        if self.isolate:
            self.outboxes[socket] = Outbox(self, socket, transport)

    def remove(self, socket: web.WebSocketResponse) -> None:
        """Forget a WebSocket that has ended; stop its Outbox."""
        self.sockets.discard(socket)
        outbox = self.outboxes.pop(socket, None)
        if outbox is not None:
            outbox.task.cancel()

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
        """Read ws:* from Redis until cancelled, reconnecting with a bounded backoff.

        The subscription is checked by a PING every `ping_every` s without
        traffic: no answer within `stale_after` s (a paused or black-holed
        Redis) counts as a lost connection, as a reset or refusal does.
        """
        backoff = 0.1
        while True:
            client = aioredis.Redis.from_url(
                self.redis_url,
                decode_responses=True,
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                async with client.pubsub() as pubsub:
                    await asyncio.wait_for(
                        self.subscribe(pubsub), self.timeout * FEED_WAIT_FACTOR
                    )
                    if self.reconnects:
                        logger.info("feed: subscribed again to Redis")
                    backoff = 0.1
                    await self.listen(pubsub)
            except UNAVAILABLE as error:
                self.subscribed.clear()
                self.reconnects += 1
                logger.warning(
                    "feed: Redis unavailable (%s); retrying in %.1f s",
                    str(error) or type(error).__name__,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self.subscribed.clear()
                await client.aclose()

    async def subscribe(self, pubsub: Any) -> None:
        """PSUBSCRIBE ws:* and wait for Redis to confirm it."""
        await pubsub.psubscribe(schema.ws_channel("*"))
        while True:
            message = await pubsub.get_message(timeout=self.timeout)
            if message is None:
                raise TimeoutError("no PSUBSCRIBE confirmation")
            if message["type"] == "psubscribe":
                self.subscribed.set()
                return

    async def listen(self, pubsub: Any) -> None:
        """Deliver messages until the subscription goes silent past `stale_after`."""
        heard = time.monotonic()
        pinged = 0.0
        while True:
            now = time.monotonic()
            if now - heard > self.stale_after:
                raise TimeoutError(f"no answer from Redis for {now - heard:.1f} s")
            if now - heard > self.ping_every and now - pinged > self.ping_every:
                await pubsub.ping()
                pinged = now
            message = await pubsub.get_message(timeout=min(self.ping_every, 1.0))
            if message is None:
                continue
            heard = time.monotonic()
            if message["type"] == "pmessage":
                await self.deliver(message)

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
        if not self.isolate:  # seeded bug `slow-subscriber`: wait on every client
            await asyncio.gather(
                *(socket.send_str(text) for socket in sockets), return_exceptions=True
            )
            return
        for socket in sockets:
            outbox = self.outboxes.get(socket)
            if outbox is not None:
                outbox.offer(text)

    async def close_all(self) -> None:
        """Close every open WebSocket (at shutdown), each within FEED_CLOSE_GRACE."""
        for outbox in self.outboxes.values():
            outbox.task.cancel()

        async def close(socket: web.WebSocketResponse) -> None:
            try:
                await asyncio.wait_for(
                    socket.close(code=1001, message=b"server shutdown"),
                    FEED_CLOSE_GRACE,
                )
            except Exception:  # noqa: BLE001 - a stalled client: reset below
                outbox = self.outboxes.get(socket)
                if outbox is not None:
                    abort_transport(outbox.transport)

        await asyncio.gather(*(close(socket) for socket in list(self.sockets)))
        await asyncio.gather(*list(self.tasks), return_exceptions=True)


async def health(request: web.Request) -> web.Response:
    """GET /health: 200 {"status": "ok"} when Redis answers a write, else 503 degraded.

    The probe is a PUBLISH (a write that stores nothing), so a Redis whose
    clients are paused for writes shows as degraded too. It always asks Redis
    (bounded), even while the breaker refuses orders, and an answer closes it.
    """
    guard = request.app[GUARD_KEY]
    client = request.app[REDIS_KEY]
    try:
        await guard.call(lambda: client.publish(HEALTH_CHANNEL, "ping"), probe=True)
    except (RedisUnavailable, ResponseError) as error:
        body = {"status": "degraded", **guard.state()}
        if isinstance(error, ResponseError):  # Redis answered, with an error
            body.update(redis="error", error=str(error))
        response = web.json_response(body, status=503)
        response.headers["Retry-After"] = str(guard.retry_after)
        return response
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


def read_initial_stock(engine: Engine, product_id: str) -> int | None:
    """The product's initial stock from the SQL products table (None if unknown)."""
    products = schema.make_tables().products
    with engine.connect() as conn:
        return conn.execute(
            select(products.c.initial_stock).where(products.c.product_id == product_id)
        ).scalar()


async def reseed_stock(request: web.Request, product_id: str) -> bool:
    """Seeded bug `stock-reseed`: recreate a missing stock key from SQL's initial stock.

    After the key is lost (a flush, say) the units already sold are sold again.
    Returns True if the key was recreated.
    """
    initial = await asyncio.to_thread(
        read_initial_stock, request.app[ENGINE_KEY], product_id
    )
    if initial is None:
        return False
    client = request.app[REDIS_KEY]
    key = schema.stock_key(product_id)
    created = await request.app[GUARD_KEY].call(
        lambda: client.set(key, initial, nx=True)
    )
    logger.warning("stock of %s missing in Redis: re-seeded to %d", product_id, initial)
    return bool(created)


async def create_order(request: web.Request) -> web.Response:
    """POST /orders: accept an order into the stream, at most once per key.

    202 accepted, 200 replayed (same Idempotency-Key), 409 sold out, 404 when
    Redis holds no stock for the product (never opened, or its key was lost:
    refused, nothing taken), 503 + Retry-After when Redis does not answer.
    """
    key = request.headers.get("Idempotency-Key", "")
    try:
        check_id("Idempotency-Key header", key, MAX_KEY_LENGTH)
        body = await read_object(request)
        product_id = check_id("product_id", body.get("product_id"))
        user_id = check_id("user_id", body.get("user_id"))
    except BadRequest as error:
        return error_response(400, "bad_request", error)
    bugs = request.app[BUGS_KEY]
    place = place_order_racy if OVERSELL in bugs else place_order_atomic
    guard = request.app[GUARD_KEY]
    try:
        outcome, order_id, stream_id = await guard.call(
            lambda: place(request, product_id, user_id, key)
        )
        if (
            outcome == "unknown"
            and STOCK_RESEED in bugs
            and await reseed_stock(request, product_id)
        ):
            outcome, order_id, stream_id = await guard.call(
                lambda: place(request, product_id, user_id, key)
            )
    except (RedisUnavailable, ResponseError, SQLAlchemyError) as error:
        return unavailable(request, error)
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
    guard = request.app[GUARD_KEY]
    try:
        pending, lag = await guard.call(lambda: stream_backlog(client))
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
        await guard.call(lambda: client.set(schema.stock_key(product_id), stock))
    except (SQLAlchemyError, RedisUnavailable, ResponseError) as error:
        return unavailable(request, error)
    return web.json_response({"product_id": product_id, "stock": stock})


def init_product_rows(engine: Engine, product_id: str, stock: int) -> None:
    """Reset the SQL product row and delete its orders, in one transaction."""
    with engine.begin() as conn:
        schema.init_product(conn, schema.make_tables(), product_id, stock)


async def get_stock(request: web.Request) -> web.Response:
    """GET /products/{product_id}/stock: the Redis counter."""
    product_id = request.match_info["product_id"]
    client = request.app[REDIS_KEY]
    try:
        stock = await request.app[GUARD_KEY].call(
            lambda: client.get(schema.stock_key(product_id))
        )
    except (RedisUnavailable, ResponseError) as error:
        return unavailable(request, error)
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
        try:
            await asyncio.wait_for(feed.subscribed.wait(), feed.join_wait)
        except TimeoutError:
            raise RedisUnavailable("the feed is not subscribed to Redis") from None
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
        client = app[REDIS_KEY]
        text = json.dumps(outgoing)
        await app[GUARD_KEY].call(
            lambda: client.publish(schema.ws_channel(channel), text)
        )
        return None
    raise BadRequest(f"unknown message type {kind!r}; expected join, leave or message")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: join channels and broadcast messages to every joined client."""
    socket = web.WebSocketResponse(heartbeat=30.0)
    await socket.prepare(request)
    feed = request.app[FEED_KEY]
    feed.add(socket, request.transport)
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
            except (BadRequest, RedisUnavailable, ResponseError) as error:
                reply = {"type": "error", "error": str(error) or type(error).__name__}
            if reply is not None:
                await socket.send_json(reply)
    finally:
        for channel in joined:
            feed.leave(channel, socket)
        feed.remove(socket)
    return socket


def create_app(
    redis_url: str,
    db_url: str,
    bugs: tuple[str, ...] = (),
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
) -> web.Application:
    """Return the API application for `redis_url` and `db_url` with `bugs` on.

    `redis_timeout` (s) bounds every Redis call (see RedisGuard); the seeded
    bug `no-redis-timeout` removes every bound.
    """
    app = web.Application()
    bounded = NO_REDIS_TIMEOUT not in bugs
    timeout = redis_timeout if bounded else None
    # redis-py's own bounds are the wall-clock cap; the guard cuts a call that
    # Redis has not answered within `timeout` of the API's running time.
    cap = hard_cap(redis_timeout) if bounded else None
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_url,
        max_connections=256,
        timeout=cap,
        decode_responses=True,
        socket_connect_timeout=cap,
        socket_timeout=cap,
        retry=Retry(NoBackoff(), 0),  # never send a command twice
    )
    client = aioredis.Redis(connection_pool=pool)
    app[REDIS_KEY] = client
    app[SCRIPT_KEY] = client.register_script(ORDER_SCRIPT)
    app[ENGINE_KEY] = sql_engine(db_url)
    app[FEED_KEY] = Feed(redis_url, redis_timeout, isolate=SLOW_SUBSCRIBER not in bugs)
    app[BUGS_KEY] = tuple(bugs)
    clock = LoopClock()
    app[GUARD_KEY] = RedisGuard(timeout, clock=clock)
    app.router.add_get("/health", health)
    app.router.add_post("/orders", create_order)
    app.router.add_post("/products/{product_id}/init", init_product)
    app.router.add_get("/products/{product_id}/stock", get_stock)
    app.router.add_get("/ws", websocket)

    async def start_feed(app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(app[FEED_KEY].run())]
        if bounded:
            tasks.append(asyncio.create_task(clock.run()))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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
    parser.add_argument(
        "--redis-timeout",
        type=float,
        default=DEFAULT_REDIS_TIMEOUT,
        help="seconds Redis may take to answer a call (of the API's running time)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        args.bugs = parse_bugs(args.bugs)
    except ValueError as error:
        parser.error(str(error))
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    if not 0 < args.redis_timeout <= 60:
        parser.error(f"--redis-timeout must be > 0 and <= 60, got {args.redis_timeout}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the order API (uvloop if installed)."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(args.redis_url, args.db_url, args.bugs, args.redis_timeout)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, app))
    else:
        uvloop.run(serve(args.host, args.port, app))


if __name__ == "__main__":
    main()
