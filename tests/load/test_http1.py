"""The Protocol-level HTTP/1.1 client against real servers on 127.0.0.1."""

import asyncio
import importlib.util
import json
import socket
import struct
import time
from typing import Self

import pytest
from aiohttp import web
from local_app import LocalApp

from chaospika._ports import free_port
from chaospika.loadengine.http1 import HttpClient, encode_request, parse_url
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.vu import VU

LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])


def run(coro, loop: str = "asyncio"):
    """Run `coro` on a fresh asyncio or uvloop event loop."""
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(coro, 20))


class AppServer(LocalApp):
    """An aiohttp app on a free loopback port that counts the connections it served."""

    def __init__(self) -> None:
        self.port = free_port()
        self.peers: set = set()
        self.url = f"http://127.0.0.1:{self.port}"
        app = web.Application()
        app.router.add_get("/hello", self.hello)
        app.router.add_get("/json", self.json)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_get("/close", self.close)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_post("/echo", self.echo)
        self.runner = web.AppRunner(app)

    def _seen(self, request: web.Request) -> None:
        self.peers.add(request.transport.get_extra_info("peername"))

    async def hello(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(text="hello")

    async def json(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.json_response({"order": {"id": 7, "items": [1, 2]}, "ok": True})

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"part1-", b"part2-", b"part3"):
            await response.write(part)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async def close(self, request: web.Request) -> web.Response:
        self._seen(request)
        response = web.Response(text="bye")
        response.force_close()
        return response

    async def slow(self, request: web.Request) -> web.Response:
        self._seen(request)
        await asyncio.sleep(1)
        return web.Response(text="late")

    async def status(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=int(request.match_info["code"]), text="s")

    async def echo(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.json_response(
            {"body": await request.text(), "headers": dict(request.headers)}
        )


class RawServer:
    """A TCP server answering every request with `handler(reader, writer)`."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await self.handler(reader, writer)
        finally:
            writer.close()


def new_vu(registry: Registry | None = None) -> VU:
    return VU(1, "test", registry or Registry(), {}, {"team": "qa"})


def stat(registry: Registry, selector: str) -> dict:
    return registry.stats(selector, trend_stats=["count", "min", "max", "avg"])


@pytest.mark.parametrize("loop", LOOPS)
def test_keep_alive_uses_one_connection_and_records_k6_metrics(loop):
    async def scenario():
        registry = Registry()
        registry.submetric("http_reqs{name:hello}")
        async with AppServer() as server:
            vu = new_vu(registry)
            responses = [
                await vu.http.request("GET", server.url + "/hello", name="hello")
                for _ in range(20)
            ]
            await vu.close()
            return registry, server, responses

    registry, server, responses = run(scenario(), loop)
    assert [r.status for r in responses] == [200] * 20
    assert all(r.body == b"hello" for r in responses)
    assert len(server.peers) == 1
    assert stat(registry, "http_reqs")["count"] == 20
    assert stat(registry, "http_reqs{name:hello}")["count"] == 20
    assert stat(registry, "http_req_failed")["rate"] == 0
    assert stat(registry, "http_req_duration")["count"] == 20
    connecting = stat(registry, "http_req_connecting")
    assert (
        connecting["count"] == 20 and connecting["max"] > 0 and connecting["min"] == 0
    )
    assert stat(registry, "data_sent")["count"] > 20 * 40
    assert stat(registry, "data_received")["count"] > 20 * 60
    timings = responses[-1].timings
    assert timings["duration"] == pytest.approx(
        timings["sending"] + timings["waiting"] + timings["receiving"]
    )
    assert timings["waiting"] > 0 and timings["connecting"] == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_chunked_body_json_and_headers(loop):
    async def scenario():
        async with AppServer() as server:
            vu = new_vu()
            chunked = await vu.http.request("GET", server.url + "/chunked")
            document = await vu.http.request("GET", server.url + "/json")
            await vu.close()
            return chunked, document, server

    chunked, document, server = run(scenario(), loop)
    assert chunked.status == 200
    assert chunked.body == b"part1-part2-part3"
    assert chunked.headers["transfer-encoding"] == "chunked"
    assert document.json() == {"order": {"id": 7, "items": [1, 2]}, "ok": True}
    assert document.headers["content-type"].startswith("application/json")
    assert len(server.peers) == 1  # the chunked response kept the connection usable


def test_post_json_and_head_share_the_connection():
    async def scenario():
        async with AppServer() as server:
            vu = new_vu()
            head = await vu.http.request("HEAD", server.url + "/hello")
            posted = await vu.http.request(
                "POST", server.url + "/echo", json={"qty": 2}, headers={"X-Id": "a1"}
            )
            after = await vu.http.request("GET", server.url + "/hello")
            await vu.close()
            return head, posted, after, server

    head, posted, after, server = run(scenario())
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == "5"
    echoed = posted.json()
    assert json.loads(echoed["body"]) == {"qty": 2}
    assert echoed["headers"]["Content-Type"] == "application/json"
    assert echoed["headers"]["X-Id"] == "a1"
    assert after.body == b"hello"
    assert len(server.peers) == 1


def test_server_that_closes_costs_a_reconnect_not_an_error():
    async def scenario():
        registry = Registry()
        async with AppServer() as server:
            vu = new_vu(registry)
            statuses = [
                (await vu.http.request("GET", server.url + "/close")).status
                for _ in range(3)
            ]
            await vu.close()
            return registry, statuses, server

    registry, statuses, server = run(scenario())
    assert statuses == [200, 200, 200]
    assert len(server.peers) == 3
    assert stat(registry, "http_req_failed")["rate"] == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_timeout_is_recorded_and_the_next_request_reconnects(loop):
    async def scenario():
        registry = Registry()
        registry.submetric("http_reqs{error_code:1050}")
        async with AppServer() as server:
            vu = new_vu(registry)
            started = time.monotonic()
            slow = await vu.http.request("GET", server.url + "/slow", timeout=0.3)
            elapsed = time.monotonic() - started
            fine = await vu.http.request("GET", server.url + "/hello")
            await vu.close()
            return registry, slow, elapsed, fine, server

    registry, slow, elapsed, fine, server = run(scenario(), loop)
    assert slow.status == 0 and slow.error_code == 1050
    assert slow.error == "request timeout"
    assert 0.25 < elapsed < 1.5
    assert fine.status == 200 and len(server.peers) == 2
    assert stat(registry, "http_req_failed") == {"rate": 0.5, "passes": 1, "fails": 1}
    assert stat(registry, "http_reqs{error_code:1050}")["count"] == 1


@pytest.mark.parametrize("loop", LOOPS)
def test_connection_refused_is_recorded_not_raised(loop):
    async def scenario():
        registry = Registry()
        registry.submetric("http_req_failed{error_code:1212}")
        vu = new_vu(registry)
        response = await vu.http.request("GET", f"http://127.0.0.1:{free_port()}/")
        await vu.close()
        return registry, response

    registry, response = run(scenario(), loop)
    assert response.status == 0
    assert response.error_code == 1212 and "refused" in response.error
    assert stat(registry, "http_reqs")["count"] == 1
    assert stat(registry, "http_req_failed{error_code:1212}")["rate"] == 1


async def _close_without_answer(reader, writer) -> None:
    writer.close()


async def _reset(reader, writer) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _answer_until_eof(reader, writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
    await writer.drain()
    writer.close()


async def _truncated(reader, writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    await writer.drain()
    writer.close()


async def _garbage(reader, writer) -> None:
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()


@pytest.mark.parametrize(
    ("handler", "status", "code", "text"),
    [
        (_close_without_answer, 0, 1000, "EOF"),
        (_reset, 0, 1220, "reset"),
        (_truncated, 0, 1000, "EOF"),
        (_garbage, 0, 1000, "malformed"),
        (_answer_until_eof, 200, 0, ""),
    ],
    ids=["closed", "reset", "truncated", "garbage", "body-until-eof"],
)
def test_broken_servers(handler, status, code, text):
    async def scenario():
        registry = Registry()
        async with RawServer(handler) as server:
            vu = new_vu(registry)
            response = await vu.http.request("GET", server.url + "/", timeout=5)
            await vu.close()
            return registry, response

    registry, response = run(scenario())
    assert (response.status, response.error_code) == (status, code)
    assert text in response.error
    assert stat(registry, "http_req_failed")["rate"] == (1 if status == 0 else 0)
    if status == 200:
        assert response.body == b"until the end"


def test_concurrent_requests_of_one_vu_open_a_second_connection():
    async def scenario():
        async with AppServer() as server:
            vu = new_vu()
            first = await asyncio.gather(
                *(vu.http.request("GET", server.url + "/hello") for _ in range(2))
            )
            again = await asyncio.gather(
                *(vu.http.request("GET", server.url + "/hello") for _ in range(2))
            )
            await vu.close()
            return first + again, server

    responses, server = run(scenario())
    assert [r.status for r in responses] == [200] * 4
    assert len(server.peers) == 2  # reused on the second round


def test_expected_statuses_decide_http_req_failed():
    async def scenario():
        registry = Registry()
        registry.submetric("http_req_duration{expected_response:false}")
        async with AppServer() as server:
            vu = new_vu(registry)
            await vu.http.request("GET", server.url + "/status/404")
            await vu.http.request(
                "GET", server.url + "/status/409", expected_statuses=[409]
            )
            await vu.close()
            return registry

    registry = run(scenario())
    assert stat(registry, "http_req_failed") == {"rate": 0.5, "passes": 1, "fails": 1}
    assert stat(registry, "http_req_duration{expected_response:false}")["count"] == 1


def test_client_exchange_and_request_encoding():
    origin, target = parse_url("http://127.0.0.1:8080/a/b?x=1#frag")
    assert (origin.host, origin.port, target) == ("127.0.0.1", 8080, "/a/b?x=1")
    assert origin.host_header == "127.0.0.1:8080"
    assert parse_url("https://example.test/")[0].port == 443
    with pytest.raises(ValueError, match="http"):
        parse_url("ftp://127.0.0.1/")
    data = encode_request("POST", origin, "/x", {"A": "1"}, b"{}")
    assert data.startswith(b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert data.endswith(b"A: 1\r\nContent-Length: 2\r\n\r\n{}")

    async def scenario():
        async with AppServer() as server:
            client = HttpClient()
            origin, target = parse_url(server.url + "/hello")
            wire = encode_request("GET", origin, target, {}, b"")
            response = await client.exchange(origin, wire, 5.0)
            client.close()
            return response

    response = run(scenario())
    assert response.status == 200 and response.text() == "hello"
    assert response.received > len(b"hello")


def _self_signed(tmp_path):
    """A self-signed certificate for 127.0.0.1, made with the openssl CLI."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


def test_https_times_the_tls_handshake_and_verifies_certificates(tmp_path):
    import ssl

    cert, key = _self_signed(tmp_path)

    async def scenario():
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        peers = set()

        async def hello(request):
            peers.add(request.transport.get_extra_info("peername"))
            return web.Response(text="secure")

        app.router.add_get("/", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        try:
            registry = Registry()
            insecure = VU(1, "tls", registry, {}, {}, tls_verify=False)
            first = await insecure.http.request("GET", f"https://127.0.0.1:{port}/")
            second = await insecure.http.request("GET", f"https://127.0.0.1:{port}/")
            await insecure.close()
            strict = VU(2, "tls", Registry(), {}, {})
            refused = await strict.http.request("GET", f"https://127.0.0.1:{port}/")
            await strict.close()
            return first, second, refused, peers, registry
        finally:
            await runner.cleanup()

    first, second, refused, peers, registry = run(scenario())
    assert first.status == 200 and first.text() == "secure"
    assert (
        first.timings["tls_handshaking"] > 0 and second.timings["tls_handshaking"] == 0
    )
    assert second.status == 200 and len(peers) == 1
    assert refused.status == 0 and refused.error_code == 1310
    assert "certificate" in refused.error
    assert stat(registry, "http_req_tls_handshaking")["count"] == 2


def test_a_cancelled_request_closes_its_connection():
    async def scenario():
        async with AppServer() as server:
            vu = new_vu()
            task = asyncio.ensure_future(vu.http.request("GET", server.url + "/slow"))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            after = await vu.http.request("GET", server.url + "/hello")
            await vu.close()
            return after, server

    after, server = run(scenario())
    assert after.status == 200
    assert len(server.peers) == 2  # the interrupted connection was not reused


async def _interim_then_chunked(reader, writer) -> None:
    """A 100 Continue head, then a chunked 200 written in several pieces."""
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Id: 7\r\n\r\n")
    await writer.drain()
    for _ in range(8):
        writer.write(b"2710\r\n" + b"y" * 10_000 + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    await reader.read()  # keep-alive: wait for the client to close


@pytest.mark.parametrize("loop", LOOPS)
def test_discarded_bodies_are_counted_not_kept(loop):
    """k6's responseType "none": the body is read off the wire (data_received) but,
    past DISCARD_AFTER bytes, not stored; the final head is kept and body is None."""

    async def scenario():
        registry = Registry()
        async with RawServer(_interim_then_chunked) as server:
            vu = new_vu(registry)
            discarded = await vu.http.request(
                "GET", server.url + "/", timeout=5, response_type="none"
            )
            await vu.close()
        async with RawServer(_interim_then_chunked) as server:
            vu = new_vu()
            kept = await vu.http.request("GET", server.url + "/", timeout=5)
            await vu.close()
        return registry, discarded, kept

    registry, discarded, kept = run(scenario(), loop)
    assert discarded.status == kept.status == 200
    assert discarded.body is None and discarded.text() is None
    with pytest.raises(ValueError, match="discardResponseBodies"):
        discarded.json()
    assert discarded.headers["x-id"] == "7"
    stored = sum(len(chunk) for chunk in discarded._raw)
    assert stored < 200  # only the 200's head kept
    assert discarded.received > 80_000
    assert discarded.received == kept.received  # the same bytes were read
    assert kept.body == b"y" * 80_000
    assert stat(registry, "data_received")["count"] == kept.received


def test_response_type_of_python_requests_is_checked():
    async def scenario():
        vu = new_vu()
        try:
            await vu.http.request("GET", "http://127.0.0.1:9/", response_type="json")
        finally:
            await vu.close()

    with pytest.raises(ValueError, match="response_type"):
        run(scenario())
