"""The sandbox's order API and WebSocket feed, against a real Redis and real processes."""

import asyncio
import base64
import errno
import json
import os
import socket
import time
import uuid

import aiohttp
import pytest
import redis
import sandbox_fixtures
from sandbox_fixtures import stop_process, wait_until
from sqlalchemy import create_engine, insert, select

from chaospika._ports import free_port
from chaospika.sandbox import schema
from chaospika.sandbox.redis_server import start_redis

spawn = sandbox_fixtures.spawn  # fixture


async def request(method: str, url: str, **kwargs) -> tuple[int, dict]:
    """One HTTP request; return (status, JSON body)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, **kwargs) as response,
    ):
        return response.status, await response.json(content_type=None)


def call(method: str, url: str, **kwargs) -> tuple[int, dict]:
    """Synchronous wrapper of `request`."""
    return asyncio.run(request(method, url, **kwargs))


def order(api: str, product_id: str, key: str | None, user_id: str = "u1"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    body = {"product_id": product_id, "user_id": user_id}
    return call("POST", f"{api}/orders", json=body, headers=headers)


async def place_orders(api: str, product_id: str, keys: list[str]) -> list:
    """Send one order per key, all in flight at once; return [(status, body)]."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(key: str) -> tuple[int, dict]:
            async with session.post(
                f"{api}/orders",
                json={"product_id": product_id, "user_id": f"user-{key}"},
                headers={"Idempotency-Key": key},
            ) as response:
                return response.status, await response.json()

        return await asyncio.gather(*(one(key) for key in keys))


def unique_keys(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


def health_ok(api: str) -> bool:
    try:
        return call("GET", f"{api}/health")[0] == 200
    except aiohttp.ClientError:
        return False


@pytest.fixture
def start_api(spawn, sqlite_url):
    """Factory: prepare `redis_url`'s group and the SQL tables, run one API process."""
    schema.create_tables(create_engine(sqlite_url))

    def start(redis_url: str, bugs: str = "") -> str:
        client = redis.Redis.from_url(redis_url)
        schema.ensure_group(client)
        client.close()
        port = free_port()
        spawn(
            "chaospika.sandbox.api",
            "--port", port,
            "--redis-url", redis_url,
            "--db-url", sqlite_url,
            "--bugs", bugs,
        )  # fmt: skip
        api = f"http://127.0.0.1:{port}"
        wait_until(lambda: health_ok(api), timeout=15)
        return api

    return start


@pytest.fixture
def api(start_api, redis_url) -> str:
    """URL of an API without bugs on the test's own Redis."""
    return start_api(redis_url)


def test_health_is_ok_when_redis_answers(api):
    assert call("GET", f"{api}/health") == (200, {"status": "ok"})


def test_200_concurrent_orders_for_stock_50_sell_exactly_50(api, redis_conn):
    assert call("POST", f"{api}/products/p1/init", json={"stock": 50}) == (
        200,
        {"product_id": "p1", "stock": 50},
    )
    results = asyncio.run(place_orders(api, "p1", unique_keys(200)))

    accepted = [body for status, body in results if status == 202]
    sold_out = [body for status, body in results if status == 409]
    assert len(accepted) == 50
    assert len(sold_out) == 150
    assert all(body == {"status": "sold_out"} for body in sold_out)
    order_ids = {body["order_id"] for body in accepted}
    assert len(order_ids) == 50
    assert redis_conn.get("stock:p1") == "0"
    assert redis_conn.xlen("orders:stream") == 50
    entries = redis_conn.xrange("orders:stream")
    assert {fields["order_id"] for _, fields in entries} == order_ids
    assert set(entries[0][1]) == {
        "order_id",
        "product_id",
        "user_id",
        "idempotency_key",
        "accepted_at",
    }
    assert call("GET", f"{api}/products/p1/stock") == (
        200,
        {"product_id": "p1", "stock": 0},
    )


def test_repeated_idempotency_key_returns_the_same_order(api, redis_conn):
    call("POST", f"{api}/products/p1/init", json={"stock": 5})
    first_status, first = order(api, "p1", "key-1")
    again_status, again = order(api, "p1", "key-1")

    assert first_status == 202 and first["status"] == "accepted"
    assert again_status == 200
    assert again["order_id"] == first["order_id"]
    assert redis_conn.get("stock:p1") == "4"
    assert redis_conn.xlen("orders:stream") == 1
    assert redis_conn.get("idem:key-1") == first["order_id"]
    assert 0 < redis_conn.ttl("idem:key-1") <= 24 * 3600


def test_concurrent_requests_with_one_key_make_one_order(api, redis_conn):
    call("POST", f"{api}/products/p1/init", json={"stock": 5})
    results = asyncio.run(place_orders(api, "p1", ["same-key"] * 20))

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [202]
    assert len({body["order_id"] for _, body in results}) == 1
    assert redis_conn.get("stock:p1") == "4"
    assert redis_conn.xlen("orders:stream") == 1


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"product_id": "p1", "user_id": "u"}, {}),
        ({"product_id": "p1", "user_id": "u"}, {"Idempotency-Key": " "}),
        ({"product_id": "p1", "user_id": "u"}, {"Idempotency-Key": "k" * 129}),
        ("not json", {"Idempotency-Key": "k"}),
        (["p1"], {"Idempotency-Key": "k"}),
        ({"user_id": "u"}, {"Idempotency-Key": "k"}),
        ({"product_id": "", "user_id": "u"}, {"Idempotency-Key": "k"}),
        ({"product_id": "p1", "user_id": 7}, {"Idempotency-Key": "k"}),
        ({"product_id": "p" * 65, "user_id": "u"}, {"Idempotency-Key": "k"}),
    ],
)
def test_bad_order_requests_get_400(api, redis_conn, body, headers):
    call("POST", f"{api}/products/p1/init", json={"stock": 5})
    data = body if isinstance(body, str) else json.dumps(body)
    status, reply = call("POST", f"{api}/orders", data=data, headers=headers)

    assert status == 400
    assert reply["status"] == "bad_request" and reply["error"]
    assert redis_conn.get("stock:p1") == "5"
    assert redis_conn.xlen("orders:stream") == 0


@pytest.mark.parametrize("stock", [-1, "5", 1.5, True, None, 10**10])
def test_init_with_a_bad_stock_gets_400(api, stock):
    status, reply = call("POST", f"{api}/products/p1/init", json={"stock": stock})
    assert status == 400
    assert "stock" in reply["error"]


def test_unknown_product_gets_404(api, redis_conn):
    status, reply = order(api, "nope", "k1")
    assert status == 404 and reply["status"] == "unknown_product"
    assert call("GET", f"{api}/products/nope/stock")[0] == 404
    assert redis_conn.xlen("orders:stream") == 0
    assert redis_conn.get("idem:k1") is None

    # A product whose stock key was lost (a flush) is refused the same way.
    call("POST", f"{api}/products/p1/init", json={"stock": 3})
    redis_conn.delete("stock:p1")
    assert order(api, "p1", "k2")[0] == 404
    assert redis_conn.get("stock:p1") is None and redis_conn.xlen("orders:stream") == 0


def test_sold_out_gets_409_and_takes_nothing(api, redis_conn):
    call("POST", f"{api}/products/p1/init", json={"stock": 0})
    assert order(api, "p1", "k1") == (409, {"status": "sold_out"})
    assert redis_conn.get("stock:p1") == "0"
    assert redis_conn.get("idem:k1") is None


def test_init_refuses_while_the_worker_lags_then_resets_sql(
    api, redis_conn, sqlite_url
):
    call("POST", f"{api}/products/p1/init", json={"stock": 3})
    order(api, "p1", "k1")
    status, reply = call("POST", f"{api}/products/p1/init", json={"stock": 9})
    assert status == 409
    assert reply["status"] == "busy" and reply["lag"] == 1

    # Act as the worker: read the entry (pending), then refused again; ack, accepted.
    read = redis_conn.xreadgroup("inventory", "w", {"orders:stream": ">"}, count=10)
    status, reply = call("POST", f"{api}/products/p1/init", json={"stock": 9})
    assert status == 409 and reply["pending"] == 1
    redis_conn.xack("orders:stream", "inventory", read[0][1][0][0])
    engine = create_engine(sqlite_url)
    tables = schema.make_tables()
    with engine.begin() as conn:
        row = {"order_id": "o1", "product_id": "p1", "stream_id": "1-0"}
        conn.execute(insert(tables.orders).values(**row))
        conn.execute(insert(tables.orders).values(**{**row, "order_id": "o2"}))
        other = {**row, "order_id": "o3", "product_id": "p2"}
        conn.execute(insert(tables.orders).values(**other))

    assert call("POST", f"{api}/products/p1/init", json={"stock": 9})[0] == 200
    assert redis_conn.get("stock:p1") == "9"
    with engine.connect() as conn:
        products = conn.execute(select(tables.products)).all()
        orders = conn.execute(select(tables.orders.c.product_id)).scalars().all()
    assert [tuple(row) for row in products] == [("p1", 9, 9)]
    assert orders == ["p2"]


async def timed(method: str, url: str, **kwargs) -> tuple[int, dict, dict, float]:
    """One HTTP request; return (status, JSON body, headers, seconds taken)."""
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, **kwargs) as response,
    ):
        body = await response.json(content_type=None)
        return response.status, body, dict(response.headers), time.monotonic() - started


def timed_call(method: str, url: str, **kwargs) -> tuple[int, dict, dict, float]:
    return asyncio.run(timed(method, url, **kwargs))


def timed_order(api: str, product_id: str, key: str):
    body = {"product_id": product_id, "user_id": "u1"}
    headers = {"Idempotency-Key": key}
    return timed_call("POST", f"{api}/orders", json=body, headers=headers)


async def orders_at_once(api: str, product_id: str, keys: list[str]) -> list:
    """Send one order per key concurrently; [(status, body, headers, seconds)]."""
    return await asyncio.gather(
        *(
            timed(
                "POST",
                f"{api}/orders",
                json={"product_id": product_id, "user_id": "u"},
                headers={"Idempotency-Key": key},
            )
            for key in keys
        )
    )


# A healthy API answers within its Redis budget (4 x 0.5 s) even on a loaded
# machine; a hang lasts the whole outage (PAUSE_MS).
FAIL_FAST_SECONDS = 2.5
PAUSE_MS = 3000


def test_redis_down_gets_503_fast_then_recovers_on_its_own(start_api, tmp_path):
    port = free_port()
    folder = str(tmp_path / "own-redis")
    server = start_redis(port, folder)
    try:
        api = start_api(f"redis://127.0.0.1:{port}/0")
        call("POST", f"{api}/products/p1/init", json={"stock": 5})
        assert order(api, "p1", "k0")[0] == 202
    finally:
        stop_process(server)

    status, reply, headers, seconds = timed_call("GET", f"{api}/health")
    assert status == 503 and reply["status"] == "degraded" and reply["error"]
    assert reply["redis"] == "unreachable" and headers["Retry-After"] == "1"
    assert seconds < FAIL_FAST_SECONDS
    status, reply, headers, seconds = timed_order(api, "p1", "k1")
    assert status == 503 and reply["status"] == "unavailable"
    assert headers["Retry-After"] == "1" and seconds < FAIL_FAST_SECONDS
    assert call("GET", f"{api}/products/p1/stock")[0] == 503
    assert call("POST", f"{api}/products/p1/init", json={"stock": 1})[0] == 503

    server = start_redis(port, folder)  # Redis returns (empty: no persistence)
    try:
        wait_until(lambda: health_ok(api), timeout=10)
        assert call("POST", f"{api}/products/p1/init", json={"stock": 2})[0] == 200
        assert order(api, "p1", "k1")[0] == 202
    finally:
        stop_process(server)


def pause(redis_url: str, ms: int) -> float:
    """CLIENT PAUSE `ms` ALL on the test's own Redis; return when it ends (monotonic)."""
    client = redis.Redis.from_url(redis_url)
    client.execute_command("CLIENT", "PAUSE", ms, "ALL")
    ends = time.monotonic() + ms / 1000
    client.close()
    return ends


def test_paused_redis_fails_fast_and_never_runs_a_refused_order(
    api, redis_url, redis_conn
):
    call("POST", f"{api}/products/p1/init", json={"stock": 50})
    assert order(api, "p1", "before")[0] == 202
    keys = unique_keys(20)
    pause_ends = pause(redis_url, PAUSE_MS)

    first = asyncio.run(orders_at_once(api, "p1", keys[:10]))  # go to Redis
    health = timed_call("GET", f"{api}/health")
    second = asyncio.run(orders_at_once(api, "p1", keys[10:]))  # the breaker
    assert time.monotonic() < pause_ends - 0.5, "the machine is too slow"

    for status, reply, headers, seconds in first + second:
        assert status == 503 and reply["status"] == "unavailable", reply
        assert headers["Retry-After"] == "1"
        assert seconds < FAIL_FAST_SECONDS
    # the breaker refuses without asking Redis (one may be its trial)
    assert sum(seconds < 0.3 for *_, seconds in second) >= 9
    status, reply, headers, seconds = health
    assert status == 503 and reply["status"] == "degraded"
    assert reply["degraded_seconds"] >= 0 and seconds < FAIL_FAST_SECONDS

    wait_until(lambda: health_ok(api), timeout=PAUSE_MS / 1000 + 10)
    assert time.monotonic() >= pause_ends - 0.1
    # The refused orders were never run, not even once the pause ended.
    time.sleep(0.2)
    assert redis_conn.get("stock:p1") == "49"
    assert redis_conn.xlen("orders:stream") == 1
    assert not [key for key in keys if redis_conn.exists(f"idem:{key}")]
    # Retrying with the same Idempotency-Key is safe and now succeeds.
    assert order(api, "p1", keys[0])[0] == 202
    assert order(api, "p1", keys[0])[0] == 200
    assert redis_conn.get("stock:p1") == "48"


def test_oversell_bug_really_oversells_under_concurrency(start_api, redis_url):
    api = start_api(redis_url, bugs="oversell")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    call("POST", f"{api}/products/p1/init", json={"stock": 20})
    results = asyncio.run(place_orders(api, "p1", unique_keys(300)))

    accepted = sum(1 for status, _ in results if status == 202)
    assert accepted > 20
    # overlapping orders wrote back the same value: the counter never goes below
    # zero, the decrements were lost instead
    assert int(client.get("stock:p1")) >= 0
    assert client.xlen("orders:stream") == accepted
    client.close()


async def ws_receive(socket, timeout: float = 5.0) -> dict:
    message = await socket.receive(timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def broadcast_between_two_instances(api_a: str, api_b: str) -> dict:
    """Run a join/send exchange; return what each client received."""
    async with aiohttp.ClientSession() as session:
        sender = await session.ws_connect(f"{api_a}/ws")
        listener = await session.ws_connect(f"{api_b}/ws")
        outsider = await session.ws_connect(f"{api_a}/ws")
        for socket, channel in ((sender, "room"), (listener, "room"), (outsider, "x")):
            await socket.send_json({"type": "join", "channel": channel})
            assert await ws_receive(socket) == {"type": "joined", "channel": channel}
        await sender.send_str("not json")
        bad_reply = await ws_receive(sender)
        await sender.send_json({"type": "message", "channel": "room", "payload": 1})
        no_sent_at = await ws_receive(sender)
        await sender.send_json(
            {
                "type": "message",
                "channel": "room",
                "payload": {"n": 1, "text": "hi"},
                "sent_at": 1712345678901.125,
            }
        )
        received = {
            "listener": await ws_receive(listener),
            "sender": await ws_receive(sender),
            "bad": bad_reply,
            "no_sent_at": no_sent_at,
        }
        try:
            received["outsider"] = await ws_receive(outsider, timeout=0.5)
        except TimeoutError:
            received["outsider"] = None
        for socket in (sender, listener, outsider):
            await socket.close()
        return received


def test_ws_broadcast_between_two_api_instances_keeps_sent_at(start_api, redis_url):
    api_a, api_b = start_api(redis_url), start_api(redis_url)
    received = asyncio.run(broadcast_between_two_instances(api_a, api_b))

    for name in ("listener", "sender"):
        message = received[name]
        assert message["type"] == "message"
        assert message["channel"] == "room"
        assert message["payload"] == {"n": 1, "text": "hi"}
        assert message["sent_at"] == 1712345678901.125
        assert isinstance(message["server_at"], float)
        assert message["server_at"] > 1.6e12
    assert received["outsider"] is None
    assert received["bad"]["type"] == "error"
    assert received["no_sent_at"]["type"] == "error"
    assert "sent_at" in received["no_sent_at"]["error"]


async def feed_survives_a_redis_restart(api: str, restart) -> list:
    """Join a channel, restart Redis, send until a message comes through."""
    async with aiohttp.ClientSession() as session:
        listener = await session.ws_connect(f"{api}/ws")
        sender = await session.ws_connect(f"{api}/ws")
        await listener.send_json({"type": "join", "channel": "room"})
        assert await ws_receive(listener) == {"type": "joined", "channel": "room"}
        await asyncio.to_thread(restart)
        received = []
        for number in range(40):  # the feed reconnects within its 2 s backoff
            await sender.send_json(
                {"type": "message", "channel": "room", "payload": number, "sent_at": 1}
            )
            try:
                message = await ws_receive(listener, timeout=0.25)
            except TimeoutError:
                continue
            received.append(message)
            break
        assert not listener.closed
        await listener.close()
        await sender.close()
        return received


def test_ws_feed_reconnects_after_redis_restarts(start_api, tmp_path):
    port = free_port()
    folder = str(tmp_path / "own-redis")
    servers = [start_redis(port, folder)]
    api = start_api(f"redis://127.0.0.1:{port}/0")

    def restart() -> None:
        stop_process(servers[-1])
        time.sleep(0.3)  # the feed notices and backs off
        servers.append(start_redis(port, folder))

    try:
        received = asyncio.run(feed_survives_a_redis_restart(api, restart))
    finally:
        for server in servers:
            stop_process(server)
    assert len(received) == 1 and received[0]["type"] == "message"
    assert received[0]["channel"] == "room"


def test_the_reseed_bug_sells_a_lost_stock_again(start_api, redis_url, redis_conn):
    """Without the bug a lost stock key is refused like an unknown product (404)."""
    api = start_api(redis_url, bugs="stock-reseed")
    call("POST", f"{api}/products/p1/init", json={"stock": 3})
    assert order(api, "p1", "k1")[0] == 202
    redis_conn.delete("stock:p1")  # lost, as in a flush

    # The bug re-seeds the key from SQL's initial stock: 3 more units on sale.
    assert order(api, "p1", "k2")[0] == 202
    assert redis_conn.get("stock:p1") == "2"
    assert [order(api, "p1", f"k{n}")[0] for n in range(3, 6)] == [202, 202, 409]
    assert redis_conn.xlen("orders:stream") == 4  # 4 orders for a stock of 3
    assert order(api, "nope", "k9")[0] == 404  # no product in SQL: still refused


async def stalled_subscriber(port: int, channel: str) -> socket.socket:
    """A raw WebSocket client with a tiny receive window: joins, then never reads."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if hasattr(socket, "TCP_MAXSEG"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    async with asyncio.timeout(5):
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        upgrade = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, upgrade.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += await loop.sock_recv(sock, 4096) or b"EOF\r\n\r\n"
        assert received.startswith(b"HTTP/1.1 101"), received
        payload = json.dumps({"type": "join", "channel": channel}).encode()
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        await loop.sock_sendall(
            sock, bytes([0x81, 0x80 | len(payload)]) + mask + masked
        )
        while b'"joined"' not in received:
            chunk = await loop.sock_recv(sock, 4096)
            assert chunk, "the API closed the stalled client before it joined"
            received += chunk
    return sock  # from here on nobody reads it


def reset(sock: socket.socket) -> bool:
    """True once the peer has reset the connection (read without consuming data)."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET


async def feed_beside_a_stalled_client(api: str, count: int, wait: float) -> dict:
    """Stall one subscriber, send `count` padded messages; what did a reader get?"""
    port = int(api.rsplit(":", 1)[1])
    stalled = await stalled_subscriber(port, "floor")
    padding = "x" * 2000  # ~0.8 MB in all: far more than the stalled path buffers
    try:
        async with aiohttp.ClientSession() as session:
            listener = await session.ws_connect(f"{api}/ws")
            sender = await session.ws_connect(f"{api}/ws")
            await listener.send_json({"type": "join", "channel": "floor"})
            assert await ws_receive(listener) == {"type": "joined", "channel": "floor"}
            started = time.monotonic()
            for number in range(count):
                await sender.send_json(
                    {
                        "type": "message",
                        "channel": "floor",
                        "payload": {"n": number, "pad": padding},
                        "sent_at": 1,
                    }
                )
            numbers: list[int] = []
            while len(numbers) < count:
                try:
                    message = await ws_receive(listener, timeout=wait)
                except TimeoutError:
                    break
                numbers.append(message["payload"]["n"])
            took = time.monotonic() - started
            was_reset = reset(stalled)
            for _ in range(60):  # the cut-off comes FEED_SEND_TIMEOUT (2 s) after
                if was_reset or len(numbers) < count:  # the stall began
                    break
                await asyncio.sleep(0.1)
                was_reset = reset(stalled)
            listener_open = not listener.closed
            await listener.close()
            await sender.close()
    finally:
        stalled.close()
    return {
        "numbers": numbers,
        "seconds": took,
        "reset": was_reset,
        "open": listener_open,
    }


def test_a_stalled_subscriber_does_not_stall_the_feed(start_api, redis_url, tmp_path):
    api = start_api(redis_url)
    got = asyncio.run(feed_beside_a_stalled_client(api, count=400, wait=3.0))

    assert got["numbers"] == list(range(400)), len(got["numbers"])
    assert got["seconds"] < 5.0, got["seconds"]
    assert got["open"]
    # The stalled client was cut off (reset), and the API says so and counts it.
    assert got["reset"] is True
    logs = "".join(path.read_text() for path in tmp_path.glob("api-*.log"))
    assert "cut off a slow WebSocket client" in logs
    assert "1 cut off so far" in logs


def test_the_slow_subscriber_bug_stalls_everyone(start_api, redis_url):
    """Seeded bug `slow-subscriber`: the feed waits on the client that stopped reading."""
    api = start_api(redis_url, bugs="slow-subscriber")
    got = asyncio.run(feed_beside_a_stalled_client(api, count=400, wait=2.0))

    # The reader gets what went out before the stalled client's buffers filled
    # (~256 KB of ~0.8 MB), then nothing while the feed waits on it.
    assert 0 < len(got["numbers"]) < 300, len(got["numbers"])
    assert got["numbers"] == list(range(len(got["numbers"])))
    assert got["reset"] is False
