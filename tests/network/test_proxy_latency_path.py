"""The latency-only path of a link (delayed in a FIFO on a precise timer) and its timer."""

import asyncio
import select
import socket
import socketserver
import time
from collections.abc import Iterator

import pytest
import requests
import uvloop
from proxy_helpers import body_of, http_get, pattern, serving

from chaospika.network.server import ProxyServerThread
from chaospika.network.toxics import timer as timer_module
from chaospika.network.toxics.latency import Latency


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    request_queue_size = 1024  # the listen backlog (socketserver's default: 5)


@pytest.fixture
def echo_server() -> Iterator[str]:
    """A TCP echo server (``host:port``) on a free loopback port."""
    with serving(_EchoServer(("127.0.0.1", 0), _Echo)) as address:
        yield address


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        data = sock.recv(size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _messages(count: int) -> list[bytes]:
    return [f"<{n:04d}>".encode() for n in range(count)]


def test_jittered_chunks_keep_their_order(echo_server, make_proxy, add_toxic):
    port = make_proxy("echo", echo_server)
    add_toxic("echo", "latency", stream="upstream", latency=20, jitter=15)
    messages = _messages(60)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for message in messages:
            sock.sendall(message)
            time.sleep(0.002)  # separate reads, so separate delayed chunks
        echoed = _read_exactly(sock, sum(map(len, messages)))
    assert echoed == b"".join(messages)


def test_removing_the_toxic_releases_delayed_data_at_once(
    echo_server, make_proxy, add_toxic, proxy_api
):
    port = make_proxy("echo", echo_server)
    add_toxic("echo", "latency", latency=5000)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"held")
        time.sleep(0.3)  # the echo is now delayed inside the proxy
        start = time.monotonic()
        gone = requests.delete(
            f"{proxy_api}/proxies/echo/toxics/latency_downstream", timeout=5
        )
        assert gone.status_code == 204
        assert _read_exactly(sock, 4) == b"held"
        assert time.monotonic() - start < 2.0  # not the 5 s of the toxic


def test_toxic_changed_mid_stream_keeps_data_and_order(
    echo_server, make_proxy, add_toxic
):
    port = make_proxy("echo", echo_server)
    add_toxic("echo", "latency", latency=300)
    messages = _messages(40)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for message in messages[:20]:
            sock.sendall(message)
            time.sleep(0.002)
        add_toxic("echo", "bandwidth", rate=50)  # latency + bandwidth: the stages
        for message in messages[20:]:
            sock.sendall(message)
            time.sleep(0.002)
        echoed = _read_exactly(sock, sum(map(len, messages)))
    assert echoed == b"".join(messages)


def test_end_of_stream_follows_the_delayed_data(http_backend, make_proxy, add_toxic):
    port = make_proxy("http", http_backend)
    add_toxic("http", "latency", latency=200)
    response, (first, end), _ = http_get(port, 50_000)
    assert body_of(response) == pattern(50_000)
    assert first >= 0.19 and end >= first  # the close came after the data


def test_lateness_is_reported_for_delayed_chunks(echo_server, make_proxy, add_toxic):
    port = make_proxy("echo", echo_server)
    add_toxic("echo", "latency", latency=30)
    late: list[float] = []
    Latency.on_forward = late.append
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(5):
                sock.sendall(b"x")
                assert _read_exactly(sock, 1) == b"x"
    finally:
        Latency.on_forward = None
    assert len(late) == 5
    assert all(0.0 <= value < 1.0 for value in late)  # never early


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_timer_never_fires_early_and_cancels(new_loop):
    async def scenario() -> tuple[list[float], bool]:
        loop = asyncio.get_running_loop()
        early: list[float] = []
        done = loop.create_future()
        remaining = [200]

        def fired(deadline: float) -> None:
            early.append(deadline - time.monotonic())
            remaining[0] -= 1
            if not remaining[0]:
                done.set_result(None)

        cancelled = []
        start = time.monotonic()
        for n in range(200):
            deadline = start + 0.001 + (n * 7919 % 200) / 4000.0  # within 50 ms
            timer_module.call_at(loop, deadline, lambda d=deadline: fired(d))
            handle = timer_module.call_at(loop, deadline, lambda: cancelled.append(1))
            handle.cancel()
        await asyncio.wait_for(done, 5)
        await asyncio.sleep(0.06)
        return early, not cancelled

    loop = new_loop()
    try:
        early, none_cancelled_ran = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert len(early) == 200
    assert max(early) <= 0.0  # every callback ran at or after its deadline
    assert none_cancelled_ran


def test_timer_closes_its_fd_when_idle(monkeypatch):
    if timer_module._TIMERFD is None:
        pytest.skip("no timerfd on this platform: loop timers are used")
    monkeypatch.setattr(timer_module, "IDLE_CLOSE", 0.05)

    async def scenario() -> tuple[int | None, int | None]:
        loop = asyncio.get_running_loop()
        fired = loop.create_future()
        timer_module.call_at(
            loop, time.monotonic() + 0.01, lambda: fired.set_result(None)
        )
        opened = timer_module._timers[loop].fd
        await fired
        await asyncio.sleep(0.2)
        return opened, timer_module._timers[loop].fd

    loop = uvloop.new_event_loop()
    try:
        opened, after = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert opened is not None and after is None


def test_a_burst_of_clients_connects_while_the_proxy_is_busy(echo_server):
    """The kernel completes 250 handshakes while the proxy's loop is blocked.

    With asyncio's default listen backlog (100) the rest of the burst would be
    dropped and retried by the clients a second later.
    """
    server = ProxyServerThread("127.0.0.1:0")
    api = server.start()
    sockets: list[socket.socket] = []
    try:
        body = {"name": "echo", "upstream": echo_server, "listen": "127.0.0.1:0"}
        answer = requests.post(f"{api}/proxies", json=body, timeout=5)
        port = int(answer.json()["listen"].rsplit(":", 1)[1])
        server._loop.call_soon_threadsafe(time.sleep, 1.5)  # the loop accepts nothing
        unblocked = time.monotonic() + 1.5
        time.sleep(0.1)
        poller = select.poll()
        for _ in range(250):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            sockets.append(sock)
            poller.register(sock, select.POLLOUT)
        connected, deadline = set(), time.monotonic() + 0.9
        while len(connected) < len(sockets) and time.monotonic() < deadline:
            for fd, _ in poller.poll(50):
                connected.add(fd)
                poller.unregister(fd)
        assert len(connected) == 250
    finally:
        for sock in sockets:
            sock.close()
        if sockets:  # let the proxy accept and close them before it stops
            time.sleep(max(0.0, unblocked - time.monotonic()) + 0.5)
        server.stop()
