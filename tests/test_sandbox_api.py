"""The sandbox's order API and WebSocket feed, against a real Redis and real processes."""

import asyncio
import json
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


def test_redis_down_gets_503(start_api, tmp_path):
    port = free_port()
    server = start_redis(port, str(tmp_path / "own-redis"))
    try:
        api = start_api(f"redis://127.0.0.1:{port}/0")
        call("POST", f"{api}/products/p1/init", json={"stock": 5})
        assert order(api, "p1", "k0")[0] == 202
    finally:
        stop_process(server)

    status, reply = call("GET", f"{api}/health")
    assert status == 503 and reply["status"] == "degraded" and reply["error"]
    status, reply = order(api, "p1", "k1")
    assert status == 503 and reply["status"] == "unavailable"
    assert call("GET", f"{api}/products/p1/stock")[0] == 503
    assert call("POST", f"{api}/products/p1/init", json={"stock": 1})[0] == 503


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
