"""WebSocket sessions for the load engine: a lean RFC 6455 client on asyncio.

The client works at the Protocol level (like http1.py): the upgrade request is
pre-encoded, frames are parsed straight from `data_received`, client frames are
masked with websockets' C `apply_mask` when available, and masks come from a
pool of `os.urandom` bytes. No extensions (k6 negotiates none by default).
Pings are answered, fragmented messages reassembled, the close handshake honoured.

`WsSession` records k6's ws_* metrics (ws_sessions, ws_connecting,
ws_msgs_sent, ws_msgs_received, ws_session_duration, data_sent/received) and
ws_msg_latency: receive time minus the sender's timestamp (ms since the epoch)
found in the received JSON message under `latency_field`. A session is read
either with `recv()` (the `exec` API) or by `listen(callback)`, which hands each
message to a plain callback as it arrives (ws_plan.py: no future per message).
"""

import asyncio
import base64
import functools
import hashlib
import json
import logging
import os
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, Self
from urllib.parse import urlsplit

from chaospika.loadengine.http1 import USER_AGENT
from chaospika.loadengine.limits import current_budget

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets ships the C speedups

    def apply_mask(data: bytes, mask: bytes) -> bytes:
        """XOR `data` with the 4-byte `mask` repeated."""
        size = len(data)
        key = (mask * (size // 4 + 1))[:size]
        return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(
            size, "big"
        )


__all__ = ["WsClosed", "WsError", "WsSession"]

logger = logging.getLogger("chaostoolkit")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_MESSAGE = 16 * 1024 * 1024
_MAX_QUEUE = 4096  # received messages kept before reading pauses
_CLOSE_TIMEOUT = 1.0
_TEXT, _BINARY, _CLOSE, _PING, _PONG = 1, 2, 8, 9, 10


class WsError(Exception):
    """The WebSocket could not be opened (bad URL, refused, handshake rejected)."""


class WsClosed(WsError):
    """The connection is closed; `code` is the close code (1006: no close frame)."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"websocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


_masks: list[bytes] = []  # unused frame masks, taken with pop()
# the first two bytes of a final, masked text frame of 0..125 bytes
_TEXT_HEADS = [bytes((0x80 | _TEXT, 0x80 | size)) for size in range(126)]


def _refill_masks() -> None:
    """1,024 fresh 4-byte masks from one os.urandom call."""
    pool = os.urandom(4096)
    _masks.extend([pool[start : start + 4] for start in range(0, 4096, 4)])


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    size = len(payload)
    try:
        mask = _masks.pop()
    except IndexError:
        _refill_masks()
        mask = _masks.pop()
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0xFE, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0xFF, size)
    return header + mask + apply_mask(payload, mask)


class _WsProtocol(asyncio.Protocol):
    """The client side of one WebSocket connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: bytes) -> None:
        self.loop = loop
        self.budget: Any = None  # the run's ConnectionBudget while it holds a slot
        self.made = False
        self.accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future = loop.create_future()
        self.buffer = bytearray()
        self.upgraded = False
        self.messages: deque = deque()
        self.on_message: Callable[[Any], None] | None = None
        self.waiter: asyncio.Future | None = None
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0
        self.closed: WsClosed | None = None
        self.close_sent = False
        self.close_received: asyncio.Future = loop.create_future()
        self.paused = False
        self.sent_bytes = 0
        self.received_bytes = 0

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.made = True

    def data_received(self, data: bytes) -> None:
        size = len(data)
        self.received_bytes += size
        buffer = self.buffer
        if (  # the common case, inlined: one whole small text message in `data`
            size >= 2
            and data[0] == 0x81
            and data[1] < 126  # no extended length, not masked
            and data[1] == size - 2  # the whole frame and nothing more
            and not buffer
            and self.on_message is not None
            and self.upgraded
        ):
            try:
                message = data[2:].decode()
            except UnicodeDecodeError:
                pass  # the general path closes with 1007
            else:
                self.on_message(message)
                return
        if buffer:
            buffer.extend(data)
            data = buffer  # type: ignore[assignment]
        consumed = 0
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                self._upgrade(bytes(data[: end + 4]))
                consumed = end + 4
        if self.upgraded:
            consumed = self._frames(data, consumed)
        if data is buffer:
            del buffer[:consumed]
        elif consumed < len(data) and self.closed is None:
            self.buffer = bytearray(data[consumed:])

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        self._closed(WsClosed(1006, str(exc) if exc else ""))

    def release(self) -> None:
        """Give back this connection's slot of the run's connection budget."""
        if self.budget is not None:
            self.budget, budget = None, self.budget
            budget.give()

    # -- the opening handshake
    def _upgrade(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if len(status) < 2 or status[1] != b"101":
            code = status[1].decode("latin-1") if len(status) > 1 else "?"
            self._reject(f"handshake rejected with HTTP status {code}")
        elif headers.get(b"sec-websocket-accept") != self.accept:
            self._reject("handshake failed: wrong Sec-WebSocket-Accept")
        elif headers.get(b"sec-websocket-extensions"):
            self._reject("handshake failed: the server imposed an extension")
        else:
            self.upgraded = True
            if not self.opened.done():
                self.opened.set_result(None)

    def _reject(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(WsError(reason))
        self.transport.abort()  # type: ignore[union-attr]

    # -- frames from the server
    def _frames(self, data: bytes, position: int) -> int:
        """Handle every complete frame in `data` from `position`; return the end."""
        size = len(data)
        while size - position >= 2:
            first, second = data[position], data[position + 1]
            length = second & 0x7F
            start = position + 2
            if length == 126:
                if size - start < 2:
                    break
                length = int.from_bytes(data[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(data[start : start + 8], "big")
                start += 8
            if second & 0x80:
                self._protocol_error(1002, "the server masked a frame")
                return size
            if length > _MAX_MESSAGE:
                self._protocol_error(1009, "message too big")
                return size
            end = start + length
            if end > size:
                break
            payload = data[start:end]
            if payload.__class__ is not bytes:  # a slice of the bytearray buffer
                payload = bytes(payload)
            if first == 0x81:  # a whole text message: the common case, inlined
                try:
                    message = payload.decode()
                except UnicodeDecodeError:
                    self._protocol_error(1007, "invalid UTF-8 in a text message")
                    return size
                if self.on_message is not None:
                    self.on_message(message)
                else:
                    self._queue(message)
            else:
                self._frame(first & 0x80, first & 0x0F, payload)
            position = end
            if self.closed is not None:
                return size
        return position

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == _TEXT or opcode == _BINARY:
            if fin:
                self._deliver(opcode, payload)
            else:
                self.fragment_opcode = opcode
                self.fragments = [payload]
        elif opcode == 0:
            self.fragments.append(payload)
            if fin:
                self._deliver(self.fragment_opcode, b"".join(self.fragments))
                self.fragments = []
        elif opcode == _PING:
            self._write(_frame(_PONG, payload))
        elif opcode == _CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            reason = payload[2:].decode("utf-8", "replace")
            if not self.close_sent:
                self.close_sent = True
                self._write(_frame(_CLOSE, payload[:2]))
            if not self.close_received.done():
                self.close_received.set_result(None)
            self._closed(WsClosed(code, reason))
            self.transport.close()  # type: ignore[union-attr]
        elif opcode != _PONG:
            self._protocol_error(1002, f"unknown opcode {opcode}")

    def _deliver(self, opcode: int, payload: bytes) -> None:
        try:
            message = payload.decode() if opcode == _TEXT else payload
        except UnicodeDecodeError:
            self._protocol_error(1007, "invalid UTF-8 in a text message")
            return
        if self.on_message is not None:
            self.on_message(message)
        else:
            self._queue(message)

    def _queue(self, message: Any) -> None:
        """Hand `message` to a waiting `receive()`, or keep it for the next one."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(message)
                return
        self.messages.append(message)
        if len(self.messages) >= _MAX_QUEUE and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _protocol_error(self, code: int, reason: str) -> None:
        if not self.close_sent:
            self.close_sent = True
            self._write(_frame(_CLOSE, code.to_bytes(2, "big") + reason.encode()))
        self._closed(WsClosed(code, reason))
        self.transport.close()  # type: ignore[union-attr]

    def _closed(self, closed: WsClosed) -> None:
        if self.closed is None:
            self.closed = closed
        if not self.opened.done():
            self.opened.set_exception(WsError(f"connection closed: {closed.reason}"))
        if not self.close_received.done():
            self.close_received.set_result(None)
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(self.closed)

    # -- our side
    def _write(self, data: bytes) -> None:
        self.sent_bytes += len(data)
        self.transport.write(data)  # type: ignore[union-attr]

    def send(self, message: str | bytes) -> None:
        """Queue one message for sending (raises WsClosed once closed)."""
        if self.closed is not None or self.close_sent:
            raise self.closed or WsClosed(1000, "closing")
        if message.__class__ is str:
            payload, first = message.encode(), 0x80 | _TEXT
        else:
            payload, first = message, 0x80 | _BINARY
        size = len(payload)
        if size < 126:  # _frame inlined for small messages
            try:
                mask = _masks.pop()
            except IndexError:
                _refill_masks()
                mask = _masks.pop()
            head = _TEXT_HEADS[size] if first == 0x81 else bytes((first, 0x80 | size))
            frame = head + mask + apply_mask(payload, mask)
        else:
            frame = _frame(first & 0x0F, payload)
        self.sent_bytes += len(frame)
        self.transport.write(frame)  # type: ignore[union-attr]

    def receive(self) -> Any:
        """A message already received, or a future for the next one."""
        if self.messages:
            message = self.messages.popleft()
            if self.paused and len(self.messages) < _MAX_QUEUE // 2:
                self.paused = False
                self.transport.resume_reading()  # type: ignore[union-attr]
            return message
        if self.closed is not None:
            raise self.closed
        self.waiter = self.loop.create_future()
        return self.waiter

    async def close(self, code: int = 1000) -> None:
        """The closing handshake: send a close frame, wait for the server's."""
        if self.closed is None and not self.close_sent:
            self.close_sent = True
            self._write(_frame(_CLOSE, code.to_bytes(2, "big")))
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await asyncio.shield(self.close_received)
            except TimeoutError:
                pass
        if self.transport is not None:
            self.transport.close()


def _upgrade_request(
    url: str, key: bytes, headers: dict[str, str] | None
) -> tuple[str, int, bool, bytes]:
    """(host, port, tls, request bytes) of the opening handshake for `url`."""
    items = tuple((headers or {}).items())
    try:
        host, port, tls, before, after = _request_around_key(url, items)
    except TypeError:  # a header value that cannot be a cache key
        host, port, tls, before, after = _request_around_key.__wrapped__(url, items)
    return host, port, tls, before + key + after


@functools.lru_cache(maxsize=256)  # a VU opens the same URL with the same headers
def _request_around_key(
    url: str, headers: tuple[tuple[str, str], ...]
) -> tuple[str, int, bool, bytes, bytes]:
    """`_upgrade_request`'s parts that do not change with the key: (host, port,
    tls, the request bytes before the key, after it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise WsError(f"expected a ws:// or wss:// URL, got {url!r}")
    tls = parts.scheme == "wss"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if port != (443 if tls else 80):
        host_header += f":{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    before = [
        f"GET {target} HTTP/1.1",
        f"Host: {host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: ",
    ]
    after = ["", "Sec-WebSocket-Version: 13"]
    if not any(name.lower() == "user-agent" for name, _ in headers):
        after.append(f"User-Agent: {USER_AGENT}")
    after.extend(
        f"{name}: {value}"
        for name, value in headers
        if value or name.lower() != "user-agent"  # userAgent "": no header
    )
    return (
        host,
        port,
        tls,
        "\r\n".join(before).encode(),
        ("\r\n".join(after) + "\r\n\r\n").encode(),
    )


async def _open(
    url: str, headers: dict[str, str] | None, timeout: float
) -> _WsProtocol:
    """Connect and upgrade; raises WsError or OSError/TimeoutError."""
    loop = asyncio.get_running_loop()
    key = base64.b64encode(os.urandom(16))
    host, port, tls, request = _upgrade_request(url, key, headers)
    protocol = _WsProtocol(loop, key)
    budget = current_budget()
    if budget is not None:
        if not budget.take():
            raise WsError(budget.error())
        protocol.budget = budget
    context = ssl.create_default_context() if tls else None

    async def connect_and_upgrade() -> None:
        await loop.create_connection(
            lambda: protocol,
            host,
            port,
            ssl=context,
            server_hostname=host if tls else None,
        )
        protocol._write(request)
        await protocol.opened

    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for may swallow a cancel
        async with asyncio.timeout(timeout):
            await connect_and_upgrade()
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.abort()
        if not protocol.made:
            protocol.release()
        raise
    return protocol


class WsSession:
    """One WebSocket connection that records what it does; an async context manager."""

    def __init__(
        self,
        url: str,
        registry: Any,
        tags: dict[str, str],
        headers: dict[str, str] | None = None,
        latency_field: str | None = None,
    ) -> None:
        self.url = url
        self.tags = tags
        self.headers = headers
        self.latency_field = latency_field
        self.closed = False
        self._registry = registry
        self._add = registry.add
        self._epoch = 0  # registry epoch of the two recorders below
        self._count_sent: Callable[[Any], None] = self._add_sent
        self._count_received: Callable[[Any], None] = self._add_received
        self._protocol: _WsProtocol | None = None
        self._opened_ns = 0

    def _add_sent(self, value: Any) -> None:
        self._add("ws_msgs_sent", value, self.tags)

    def _add_received(self, value: Any) -> None:
        self._add("ws_msgs_received", value, self.tags)

    def _recorders(self) -> None:
        """Take the registry's recorders of ws_msgs_sent/received for these tags."""
        registry = self._registry
        recorders = getattr(registry, "recorders", None)
        if recorders is not None:
            self._count_sent, self._count_received = recorders(
                ("ws_msgs_sent", "ws_msgs_received"), self.tags
            )
            self._epoch = registry.epoch

    async def open(self, timeout: float = 10.0) -> Self:
        """Connect (the whole handshake is recorded as ws_connecting)."""
        start = perf_counter_ns()
        self._protocol = await _open(self.url, self.headers, timeout)
        self._opened_ns = now = perf_counter_ns()
        self._add("ws_connecting", (now - start) / 1e6, self.tags)
        self._add("ws_sessions", 1, self.tags)
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def protocol(self) -> _WsProtocol:
        """The connection's protocol (ws_plan hands it to ws_tick_reads)."""
        return self._protocol  # type: ignore[return-value]

    @property
    def ended(self) -> asyncio.Future:
        """A future that is done once the connection closed or is closing."""
        return self._protocol.close_received  # type: ignore[union-attr]

    def send_nowait(self, message: Any) -> None:
        """Send text, bytes, or a JSON value (dicts and lists are encoded)."""
        if not isinstance(message, (str, bytes)):
            message = json.dumps(message, separators=(",", ":"))
        self._protocol.send(message)  # type: ignore[union-attr]
        if self._epoch != getattr(self._registry, "epoch", 0):
            self._recorders()
        self._count_sent(1)

    async def send(self, message: Any) -> None:
        """Send text, bytes, or a JSON value (dicts and lists are encoded)."""
        self.send_nowait(message)

    async def recv(self, timeout: float | None = None) -> Any:
        """Receive one message (str or bytes); raises WsClosed once closed."""
        message = self._protocol.receive()  # type: ignore[union-attr]
        if isinstance(message, asyncio.Future):
            if timeout is None:
                message = await message
            else:
                async with asyncio.timeout(timeout):
                    message = await message
        self._received(message)
        return message

    def listen(self, callback: Callable[[Any], None]) -> None:
        """Hand every message, queued ones first, to `callback` instead of `recv()`."""
        protocol: _WsProtocol = self._protocol  # type: ignore[assignment]
        received = self._received
        registry = self._registry

        def deliver_and_measure(message: Any) -> None:
            received(message)
            callback(message)

        def deliver_only(message: Any) -> None:  # `_received` inlined: one call less
            if self._epoch != getattr(registry, "epoch", 0):
                self._recorders()
            self._count_received(1)
            callback(message)

        measure = self.latency_field is not None
        deliver = deliver_and_measure if measure else deliver_only

        while protocol.messages:
            deliver(protocol.messages.popleft())
        protocol.on_message = deliver
        if protocol.paused:
            protocol.paused = False
            protocol.transport.resume_reading()  # type: ignore[union-attr]

    def _received(self, message: Any) -> None:
        """Record one received message (and its latency when a field is set)."""
        if self._epoch != getattr(self._registry, "epoch", 0):
            self._recorders()
        self._count_received(1)
        field = self.latency_field
        if field is not None:
            latency = _latency_ms(message, field)
            if latency is not None:
                self._add("ws_msg_latency", latency, self.tags)

    async def close(self) -> None:
        """Close (with the closing handshake) and record duration and bytes."""
        if self._finish():
            await self._protocol.close()  # type: ignore[union-attr]

    def abort(self) -> None:
        """Drop the connection at once (no handshake) and record duration and bytes."""
        if self._finish():
            self._protocol.transport.abort()  # type: ignore[union-attr]

    def _finish(self) -> bool:
        """Mark closed and record; False when there was nothing open."""
        if self.closed or self._protocol is None:
            self.closed = True
            return False
        self.closed = True
        protocol, add = self._protocol, self._add
        duration = (perf_counter_ns() - self._opened_ns) / 1e6
        add("ws_session_duration", duration, self.tags)
        add("data_sent", protocol.sent_bytes, self.tags)
        add("data_received", protocol.received_bytes, self.tags)
        return True


def _latency_ms(message: Any, field: str) -> float | None:
    """now_ms - message[field] for a JSON object message carrying a number there."""
    try:
        sent_at = json.loads(message)[field]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)):
        return None
    return time.time() * 1000 - sent_at
