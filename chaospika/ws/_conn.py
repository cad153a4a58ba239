"""Opening, subscribing and closing the probes' WebSocket connections.

Two clients: the `websockets` library (`open_connection`, a `StampedConnection`:
connection_flap's clients and the stalled subscribers, which need their own
socket options) and the load engine's lean client (`open_session`, a
`chaospika.loadengine.ws.WsSession`: message_latency's subscribers and publisher,
whose messages are handled in the transport callback, cheap enough for
thousands of subscribers and timed exactly as the load engine times them).
Every failure to open becomes `ConnectFailed` with a short `kind` ("refused",
"timeout", "http 404", "handshake", "dns", "network") so the probes can count
them and explain the first one. No HTTP proxy from the environment is used, no
compression is negotiated (k6 negotiates none), no keepalive pings are sent.
"""

import asyncio
import inspect
import json
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import Frame, Opcode

from chaospika import __version__
from chaospika.loadengine import WsClosed, WsError, WsSession

__all__ = [
    "ConnectFailed",
    "StampedConnection",
    "abort_all",
    "ack_matcher",
    "close_all",
    "close_sessions",
    "open_connection",
    "open_session",
    "subscribe",
    "subscribe_session",
]

USER_AGENT = f"chaostoolkit-pika/{__version__} (ws probe)"
MAX_MESSAGE = 16 * 1024 * 1024
CLOSE_TIMEOUT = 1.0
# A stalled subscriber advertises a tiny window and segment size, so that a
# server blocks on it after ~256 KB instead of the ~4 MB of default buffers.
STALLED_RCVBUF = 4096
STALLED_MSS = 536

_HAS_PROXY = "proxy" in inspect.signature(connect.__init__).parameters
_MESSAGE_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class StampedConnection(ClientConnection):
    """A client connection that notes when each message arrived.

    The time is taken as the last frame of a message is parsed, in the
    transport's callback (as the load engine's client does), not when a
    coroutine later gets the message from `recv()`: other callbacks of the same
    loop iteration do not count as latency. After each `recv()` (and each step
    of `async for`), `stamp` is (perf_counter_ns, time_ns) of that message.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stamps: deque[tuple[int, int]] = deque()
        self.stamp: tuple[int, int] = (0, 0)

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.fin and event.opcode in _MESSAGE_OPCODES:
            self.stamps.append((time.perf_counter_ns(), time.time_ns()))
        super().process_event(event)

    async def recv(self, decode: bool | None = None) -> Any:
        message = await super().recv(decode)
        if self.stamps:
            self.stamp = self.stamps.popleft()
        return message


class ConnectFailed(Exception):
    """A WebSocket could not be opened; `kind` sorts the reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_HTTP_STATUS = re.compile(r"HTTP status (\S+)")


def _failure(error: BaseException) -> ConnectFailed:
    if isinstance(error, WsError) and not isinstance(error, WsClosed):
        found = _HTTP_STATUS.search(str(error))
        if found:
            return ConnectFailed(
                f"http {found.group(1)}",
                f"not a WebSocket endpoint: the server answered HTTP {found.group(1)} "
                "to the upgrade request",
            )
        if str(error).startswith("connection closed"):
            return ConnectFailed("closed", f"the server closed the connection: {error}")
        return ConnectFailed("handshake", f"WebSocket handshake failed: {error}")
    if isinstance(error, InvalidStatus):
        code = error.response.status_code
        return ConnectFailed(
            f"http {code}",
            f"not a WebSocket endpoint: the server answered HTTP {code} "
            "to the upgrade request",
        )
    if isinstance(error, InvalidURI):
        return ConnectFailed("url", f"bad URL: {error}")
    if isinstance(error, InvalidHandshake):
        return ConnectFailed("handshake", f"WebSocket handshake failed: {error}")
    if isinstance(error, ConnectionRefusedError):
        return ConnectFailed("refused", "connection refused")
    if isinstance(error, TimeoutError):
        return ConnectFailed("timeout", "timed out opening the WebSocket")
    if isinstance(error, socket.gaierror):
        return ConnectFailed("dns", f"cannot resolve the host: {error.strerror}")
    if isinstance(error, ssl.SSLError):
        return ConnectFailed("tls", f"TLS failed: {error}")
    if isinstance(error, OSError):
        return ConnectFailed("network", error.strerror or str(error) or "OSError")
    return ConnectFailed("error", f"{type(error).__name__}: {error}")


async def _stalled_socket(url: str, timeout: float) -> socket.socket:
    """A connected TCP socket with a tiny receive window (for a stalled subscriber)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
        if hasattr(socket, "TCP_MAXSEG"):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, STALLED_MSS)
            except OSError:
                pass
        async with asyncio.timeout(max(timeout, 0.001)):
            await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_connection(
    url: str,
    headers: dict[str, str] | None,
    timeout: float,
    stalled: bool = False,
) -> tuple[StampedConnection, float]:
    """Open a WebSocket; return it and the time the opening took (ms).

    Raises ConnectFailed. A `stalled` connection is made for a subscriber that
    will stop reading (see `STALLED_RCVBUF`).
    """
    options: dict[str, Any] = {
        "additional_headers": headers or None,
        "user_agent_header": USER_AGENT,
        "compression": None,
        "open_timeout": max(timeout, 0.001),
        "ping_interval": None,
        "close_timeout": CLOSE_TIMEOUT,
        "max_size": MAX_MESSAGE,
        "create_connection": StampedConnection,
    }
    if _HAS_PROXY:
        options["proxy"] = None
    start = time.perf_counter_ns()
    try:
        if stalled:
            options["sock"] = await _stalled_socket(url, timeout)
            options["max_queue"] = 1
            spent = (time.perf_counter_ns() - start) / 1e9
            options["open_timeout"] = max(timeout - spent, 0.001)
        connection = await connect(url, **options)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - every reason becomes a kind
        raise _failure(error) from None
    return connection, (time.perf_counter_ns() - start) / 1e6


def ack_matcher(ack: Any) -> Callable[[Any], bool] | None:
    """A test of a received message against `subscribe_ack`.

    A dict matches a JSON object message holding those keys with those values;
    a string matches a message containing it; None: no acknowledgement awaited.
    """
    if ack is None:
        return None
    if isinstance(ack, str):
        return lambda message: isinstance(message, str) and ack in message

    def matches(message: Any) -> bool:
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            return False
        return isinstance(data, dict) and all(
            key in data and data[key] == value for key, value in ack.items()
        )

    return matches


async def subscribe(
    connection: ClientConnection,
    message: str | None,
    matcher: Callable[[Any], bool] | None,
    timeout: float,
) -> None:
    """Send the subscribe `message`; wait for the acknowledgement if `matcher`.

    Raises TimeoutError when no acknowledgement came within `timeout`, and the
    websockets ConnectionClosed when the server closed the connection.
    """
    if message is not None:
        await connection.send(message)
    if matcher is None:
        return
    async with asyncio.timeout(max(timeout, 0.001)):
        while not matcher(await connection.recv()):
            pass


def abort_all(connections: Iterable[ClientConnection]) -> None:
    """Drop connections at once (no closing handshake)."""
    for connection in connections:
        transport = connection.transport
        if transport is not None and not transport.is_closing():
            transport.abort()


async def close_all(connections: list[ClientConnection], timeout: float) -> None:
    """Close connections with the closing handshake; abort what is left after `timeout`."""
    if connections:
        tasks = [asyncio.ensure_future(c.close()) for c in connections]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" warning
    abort_all(connections)


async def open_session(
    url: str, headers: dict[str, str] | None, timeout: float, registry: Any
) -> tuple[WsSession, float]:
    """Open a lean load-engine WebSocket session; return it and its opening time (ms).

    The session hands each message to a callback as it is parsed (`listen`),
    without a task switch: cheap enough for thousands of subscribers. Raises
    ConnectFailed.
    """
    session = WsSession(url, registry, {}, headers)
    start = time.perf_counter_ns()
    try:
        await session.open(max(timeout, 0.001))
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - every reason becomes a kind
        raise _failure(error) from None
    return session, (time.perf_counter_ns() - start) / 1e6


async def subscribe_session(
    session: WsSession,
    message: str | None,
    matcher: Callable[[Any], bool] | None,
    timeout: float,
) -> None:
    """`subscribe` for a WsSession (raises TimeoutError or WsClosed)."""
    if message is not None:
        session.send_nowait(message)
    if matcher is None:
        return
    async with asyncio.timeout(max(timeout, 0.001)):
        while not matcher(await session.recv()):
            pass


async def close_sessions(sessions: list[WsSession]) -> None:
    """Close sessions with the closing handshake (each waits at most 1 s for it)."""
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
