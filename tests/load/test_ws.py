"""WebSocket sessions and `ws` steps against a real websockets server on 127.0.0.1."""

import asyncio
import importlib.util
import json
import math
import time
from typing import Self

import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from chaospika._ports import free_port
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.steps import compile_steps
from chaospika.loadengine.vu import VU
from chaospika.loadengine.ws import WsClosed, WsError
from chaospika.loadengine.ws_plan import _ticker
from chaospika.loadengine.ws_tick_reads import TickReads

LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])


def run(coro, loop: str = "asyncio"):
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(coro, 20))


class WsServer:
    """A websockets server on a free loopback port; `mode` picks its behaviour."""

    def __init__(self, mode: str = "echo") -> None:
        self.mode = mode
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/chat"
        self.received: list = []
        self.connections = 0
        self.headers: list = []
        self.server = None

    async def __aenter__(self) -> Self:
        self.server = await serve(self.handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, connection) -> None:
        self.connections += 1
        self.headers.append(connection.request.headers)
        try:
            async for message in connection:
                self.received.append(message)
                if self.mode == "echo":
                    await connection.send(message)
                elif self.mode == "close-after-one":
                    await connection.close()
                    return
                elif self.mode == "protocol":
                    await self.protocol_tour(connection, message)
                    return
        except ConnectionClosed:
            pass

    async def protocol_tour(self, connection, message) -> None:
        """Fragments, big frames, binary, a ping that needs its pong, a close code."""
        await connection.send(["frag", "mented ", "é"])
        await connection.send("x" * 200)  # 16-bit length
        await connection.send(b"\x00" * 70_000)  # 64-bit length
        pong = await connection.ping(b"are you there")
        await asyncio.wait_for(pong, 2)
        await connection.send("pong seen")
        await connection.close(code=4001, reason="bye")


def stats(registry: Registry, name: str) -> dict:
    return registry.stats(name, trend_stats=["count", "min", "max"])


def ws_iteration(registry: Registry, ws: dict):
    return compile_steps("scenarios.chat.steps", [{"ws": ws}], scenario="chat")


@pytest.mark.parametrize("loop", LOOPS)
def test_ws_step_sends_expects_and_measures_latency(loop):
    async def scenario():
        async with WsServer() as server:
            registry = Registry()
            iteration = ws_iteration(
                registry,
                {
                    "url": server.url,
                    "headers": {"X-VU": "{{vu}}"},
                    "join": {"type": "join", "vu": "{{vu}}"},
                    "send": {
                        "every": "20ms",
                        "count": 5,
                        "message": {"type": "say", "sent_at": "{{now_ms}}"},
                    },
                    "expect": {"count": 6, "timeout": "3s"},
                    "latency_field": "sent_at",
                },
            )
            vu = VU(4, "chat", registry, {}, {})
            started = time.monotonic()
            await iteration(vu)
            elapsed = time.monotonic() - started
            await vu.close()
            return server, registry, elapsed

    server, registry, elapsed = run(scenario(), loop)
    assert json.loads(server.received[0]) == {"type": "join", "vu": 4}
    assert [json.loads(m)["type"] for m in server.received[1:]] == ["say"] * 5
    assert server.headers[0]["X-VU"] == "4"
    assert stats(registry, "ws_sessions")["count"] == 1
    assert stats(registry, "ws_msgs_sent")["count"] == 6
    assert stats(registry, "ws_msgs_received")["count"] == 6
    latency = stats(registry, "ws_msg_latency")
    assert latency["count"] == 5 and 0 <= latency["min"] and latency["max"] < 1000
    assert stats(registry, "ws_connecting")["count"] == 1
    assert stats(registry, "ws_session_duration")["count"] == 1
    assert stats(registry, "data_sent")["count"] > 0
    assert registry.stats("checks") == {"rate": 1.0, "passes": 2, "fails": 0}
    assert 0.08 < elapsed < 2


@pytest.mark.parametrize("loop", LOOPS)
def test_senders_share_one_loop_timer_per_millisecond(loop):
    async def scenario():
        running = asyncio.get_running_loop()
        ticker = _ticker(running)
        assert _ticker(running) is ticker  # one per loop
        fired: list = []
        base = math.ceil(running.time() * 1000) / 1000 + 0.05
        for name, when in [("a", base), ("b", base - 0.0004), ("c", base)]:
            ticker.call_at(when, lambda name=name: fired.append((name, running.time())))
        assert len(ticker.due) == 1  # a, b and c are due in one millisecond: one timer
        assert len(next(iter(ticker.due.values()))[1]) == 3
        late = ticker.call_at(base + 0.02, lambda: fired.append(("late", 0)))
        ticker.call_at(base + 0.02, lambda: fired.append(("kept", running.time())))
        dropped = ticker.call_at(base + 0.03, lambda: fired.append(("dropped", 0)))
        assert len(ticker.due) == 3
        timer = ticker.due[dropped][0]
        ticker.cancel(dropped, ticker.due[dropped][1][0])
        assert dropped not in ticker.due and timer.cancelled()  # no timer left behind
        ticker.cancel(late, ticker.due[late][1][0])  # the other stays due
        await asyncio.sleep(0.1)
        return fired, base, ticker.due

    fired, base, due = run(scenario(), loop)
    assert [name for name, _ in fired] == ["a", "b", "c", "kept"]
    assert fired[0][1] >= base - 0.0001  # not before the millisecond due
    assert fired[3][1] >= base + 0.02 - 0.0001
    assert due == {}


def test_unmet_expectation_is_a_failed_check_within_its_timeout():
    async def scenario():
        async with WsServer(mode="silent") as server:
            registry = Registry()
            iteration = ws_iteration(
                registry,
                {
                    "url": server.url,
                    "join": "hi",
                    "expect": {"count": 1, "timeout": "300ms"},
                },
            )
            started = time.monotonic()
            await iteration(VU(1, "chat", registry, {}, {}))
            return registry, time.monotonic() - started

    registry, elapsed = run(scenario())
    assert 0.25 < elapsed < 1.5
    assert registry.stats("checks") == {"rate": 0.5, "passes": 1, "fails": 1}


def test_hold_keeps_the_session_open():
    async def scenario():
        async with WsServer() as server:
            registry = Registry()
            iteration = ws_iteration(registry, {"url": server.url, "hold": "300ms"})
            started = time.monotonic()
            await iteration(VU(1, "chat", registry, {}, {}))
            return registry, time.monotonic() - started

    registry, elapsed = run(scenario())
    assert 0.28 < elapsed < 1.5
    assert stats(registry, "ws_session_duration")["min"] >= 280


def test_reconnects_after_the_server_drops_the_session():
    async def scenario():
        async with WsServer(mode="close-after-one") as server:
            registry = Registry()
            iteration = ws_iteration(
                registry,
                {
                    "url": server.url,
                    "send": {"every": "50ms", "count": 3, "message": "m{{counter}}"},
                    "reconnects": 5,
                },
            )
            await iteration(VU(1, "chat", registry, {}, {}))
            return server, registry

    server, registry = run(scenario())
    assert server.connections == 3
    assert len(server.received) == 3
    assert stats(registry, "ws_sessions")["count"] == 3
    assert stats(registry, "ws_msgs_sent")["count"] == 3


def test_refused_connection_is_a_failed_check_not_an_exception():
    async def scenario():
        registry = Registry()
        iteration = ws_iteration(
            registry, {"url": f"ws://127.0.0.1:{free_port()}/x", "reconnects": 1}
        )
        await iteration(VU(1, "chat", registry, {}, {}))
        return registry

    registry = run(scenario())
    assert registry.stats("checks") == {"rate": 0.0, "passes": 0, "fails": 2}
    assert stats(registry, "ws_sessions")["count"] == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_exec_api_session(loop):
    async def scenario():
        async with WsServer() as server:
            registry = Registry()
            vu = VU(2, "chat", registry, {}, {})
            async with vu.ws(server.url, latency_field="t") as session:
                await session.send({"t": time.time() * 1000, "n": 1})
                reply = json.loads(await session.recv(timeout=2))
                await session.send(b"raw")
                raw = await session.recv(timeout=2)
            await vu.close()
            return registry, reply, raw

    registry, reply, raw = run(scenario(), loop)
    assert reply["n"] == 1 and raw == b"raw"
    assert stats(registry, "ws_msgs_sent")["count"] == 2
    assert stats(registry, "ws_msgs_received")["count"] == 2
    assert stats(registry, "ws_msg_latency")["count"] == 1
    assert stats(registry, "ws_sessions")["count"] == 1


@pytest.mark.parametrize("loop", LOOPS)
def test_listen_hands_over_queued_then_new_messages_and_records_them(loop):
    async def scenario():
        async with WsServer() as server:
            registry = Registry()
            vu = VU(1, "chat", registry, {}, {})
            async with vu.ws(server.url) as session:
                for n in range(3):
                    await session.send(f"early {n}")
                while len(server.received) < 3:  # the echoes are queued by now
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
                got: list = []
                session.listen(got.append)
                assert got[:1] == ["early 0"]
                await session.send("late")
                while len(got) < 4:
                    await asyncio.sleep(0.01)
                ended_before_close = session.ended.done()
            await vu.close()
            return registry, got, ended_before_close, session.ended.done()

    registry, got, ended_before, ended_after = run(scenario(), loop)
    assert got == ["early 0", "early 1", "early 2", "late"]
    assert stats(registry, "ws_msgs_received")["count"] == 4
    assert ended_before is False and ended_after is True


@pytest.mark.parametrize("loop", LOOPS)
def test_protocol_fragments_lengths_ping_and_close_code(loop):
    async def scenario():
        async with WsServer(mode="protocol") as server:
            vu = VU(1, "chat", Registry(), {}, {})
            async with vu.ws(server.url) as session:
                await session.send("start")
                received = [await session.recv(timeout=3) for _ in range(4)]
                with pytest.raises(WsClosed) as closed:
                    await session.recv(timeout=3)
            await vu.close()
            return received, closed.value

    received, closed = run(scenario(), loop)
    assert received[0] == "fragmented é"
    assert received[1] == "x" * 200
    assert received[2] == b"\x00" * 70_000
    assert received[3] == "pong seen"
    assert (closed.code, closed.reason) == (4001, "bye")


def test_handshake_refused_by_a_plain_http_server():
    from aiohttp import web

    async def scenario():
        app = web.Application()
        app.router.add_get("/chat", lambda request: web.Response(status=403))
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            vu = VU(1, "chat", Registry(), {}, {})
            with pytest.raises(WsError, match="HTTP status 403"):
                await vu.ws(f"ws://127.0.0.1:{port}/chat").open(timeout=3)
            with pytest.raises(WsError, match="ws://"):
                await vu.ws(f"http://127.0.0.1:{port}/chat").open(timeout=3)
            await vu.close()
        finally:
            await runner.cleanup()

    run(scenario())


def test_a_message_template_without_its_var_ends_the_iteration(caplog):
    async def scenario():
        async with WsServer() as server:
            registry = Registry()
            iteration = ws_iteration(
                registry,
                {
                    "url": server.url,
                    "send": {"every": "10ms", "count": 2, "message": "{{var.room}}"},
                },
            )
            vu = VU(1, "chat", registry, {}, {})
            await iteration(vu)
            await vu.close()
            return server, registry

    server, registry = run(scenario())
    assert server.received == []
    assert stats(registry, "ws_session_duration")["count"] == 1
    assert "var.room" in caplog.text


def test_a_cancelled_session_is_dropped_at_once():
    async def scenario():
        async with WsServer() as server:
            registry = Registry()
            iteration = ws_iteration(registry, {"url": server.url, "hold": "30s"})
            vu = VU(1, "chat", registry, {}, {})
            task = asyncio.ensure_future(iteration(vu))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return registry, time.monotonic() - started

    registry, elapsed = run(scenario())
    assert elapsed < 0.3  # at once, with slack for a loaded CI machine
    assert stats(registry, "ws_session_duration")["count"] == 1


async def _wait_for(condition, seconds: float = 2.0) -> None:
    """Until `condition()` holds (AssertionError after `seconds`)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


@pytest.mark.parametrize("loop", LOOPS)
def test_tick_reads_wait_for_a_due_tick_else_wake_the_loop(loop):
    async def scenario():
        async with WsServer() as server:
            running = asyncio.get_running_loop()
            vu = VU(1, "chat", Registry(), {}, {})
            session = await vu.ws(server.url).open()
            got: list = []
            session.listen(got.append)
            reads = TickReads(running)
            fd = reads.add(session.protocol)
            assert fd is not None and reads.watching  # no tick yet: arrivals wake
            session.send_nowait("woken")
            await _wait_for(lambda: got == ["woken"])  # read as it arrived

            reads.after_tick(tick_soon=True)  # a tick is due: arrivals wait for it
            assert not reads.watching
            session.send_nowait("ticked")
            await _wait_for(lambda: len(server.received) == 2)
            await asyncio.sleep(0.05)  # the echo is back, nobody read it
            waited = list(got)
            reads.read()  # what the tick does
            after_tick = list(got)

            session.send_nowait("unread")
            await _wait_for(lambda: len(server.received) == 3)
            await asyncio.sleep(0.05)
            reads.remove(fd, session.protocol)  # back to the loop: read at once
            reads.remove(fd, session.protocol)  # twice is harmless
            await _wait_for(lambda: len(got) == 3)
            session.send_nowait("loop")
            await _wait_for(lambda: len(got) == 4)
            state = (dict(reads.protocols), reads.watching)
            await session.close()
            return waited, after_tick, got, state

    waited, after_tick, got, state = run(scenario(), loop)
    assert waited == ["woken"]
    assert after_tick == ["woken", "ticked"]
    assert got == ["woken", "ticked", "unread", "loop"]
    assert state == ({}, False)


class _TlsTransport:
    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str):
        return object() if name == "sslcontext" else None


def test_tick_reads_leave_tls_connections_to_the_loop():
    async def scenario():
        reads = TickReads(asyncio.get_running_loop())
        protocol = type("Protocol", (), {"transport": _TlsTransport()})()
        return reads.add(protocol), reads.protocols, reads.watching

    assert run(scenario()) == (None, {}, False)


def test_tick_reads_leave_connections_to_the_loop_without_epoll(monkeypatch):
    monkeypatch.delattr("select.epoll")  # as on macOS

    async def scenario():
        async with WsServer() as server:
            registry = Registry()
            step = {
                "url": server.url,
                "send": {"every": "2ms", "count": 20, "message": "m{{counter}}"},
                "expect": {"count": 20, "timeout": "3s"},
            }
            await ws_iteration(registry, step)(VU(1, "chat", registry, {}, {}))
            reads = _ticker(asyncio.get_running_loop()).reads
            return registry, reads.poller, reads.protocols

    registry, poller, protocols = run(scenario())
    assert stats(registry, "ws_msgs_received")["count"] == 20
    assert (poller, protocols) == (None, {})


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("latency", [False, True])
def test_sending_sessions_are_read_at_ticks_unless_latency_is_measured(loop, latency):
    async def scenario():
        async with WsServer() as server:
            registry = Registry()
            step = {
                "url": server.url,
                "send": {"every": "2ms", "count": 40, "message": {"t": "{{now_ms}}"}},
                "expect": {"count": 40, "timeout": "3s"},
            }
            if latency:
                step["latency_field"] = "t"
            iteration = ws_iteration(registry, step)
            reads = _ticker(asyncio.get_running_loop()).reads
            added: list = []
            add = reads.add

            def counting_add(protocol):
                fd = add(protocol)
                added.append(fd is not None)
                return fd

            reads.add = counting_add
            vus = [VU(n, "chat", registry, {}, {}) for n in range(1, 6)]
            await asyncio.gather(*(iteration(vu) for vu in vus))
            for vu in vus:
                await vu.close()
            return registry, added, dict(reads.protocols), reads.watching

    registry, added, left, watching = run(scenario(), loop)
    assert stats(registry, "ws_msgs_sent")["count"] == 200
    assert stats(registry, "ws_msgs_received")["count"] == 200
    assert registry.stats("checks") == {"rate": 1.0, "passes": 10, "fails": 0}
    assert added == ([] if latency else [True] * 5)  # read at ticks unless measured
    assert (left, watching) == ({}, False)  # every connection went back to the loop
