"""A fast HTTP/1.1 client at the asyncio Protocol level, k6's way.

Each VU owns one `HttpClient`; it keeps one keep-alive connection per origin
(scheme, host, port) and opens another only when the VU has two requests in
flight to the same origin. Requests are pre-encoded bytes. Responses go through
a lean `httptools` parser that only reports the end of each message; the raw
bytes are kept, and headers and body are parsed from them only when someone
reads them (a check, a capture, an exec function). A request that discards its
body (k6's discardResponseBodies / responseType "none") is read off the wire and
counted, but past DISCARD_AFTER bytes only the head is kept. Phases are timed with
`perf_counter_ns`. A closed or reset connection fails only the request it
carried (no retry, like k6); the next request reconnects.
"""

import asyncio
import json as jsonlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

from httptools import HttpParserError, HttpResponseParser

from chaospika.loadengine.limits import current_budget

__all__ = [
    "DEFAULT_EXPECTED",
    "DEFAULT_MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "USER_AGENT",
    "Hop",
    "HttpClient",
    "Origin",
    "Response",
    "TransportError",
    "encode_request",
    "expected_statuses",
    "failed_response",
    "follow_redirects",
    "next_hop",
    "parse_url",
]

logger = logging.getLogger("chaostoolkit")

USER_AGENT = "Grafana k6/1.1.0"  # k6 1.1.0's: same bytes sent (data_sent) as k6
DEFAULT_EXPECTED = frozenset(range(200, 400))
DEFAULT_MAX_REDIRECTS = 10  # k6's maxRedirects
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
# a discarded body is stored until the response passes this many bytes (small
# ones cost nothing to keep; Response.body is None all the same), then dropped
DISCARD_AFTER = 16_384
RESPONSE_TYPES = ("text", "binary", "none")  # k6's Params.responseType
_BODYLESS = (301, 302, 303)  # these turn a POST (any non-GET/HEAD) into a GET
_SENSITIVE = frozenset(  # headers Go's client does not send to another host
    b"authorization www-authenticate cookie cookie2 proxy-authorization "
    b"proxy-authenticate".split()
)
_DNS_TTL = 300.0
_redirect_warnings: set[str] = set()
_dns_cache: dict[tuple[str, int], tuple[float, str]] = {}


class Origin(NamedTuple):
    """Where a connection goes: scheme ("http"/"https"), host and port."""

    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        """The Host header value (port only when not the scheme's default)."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> tuple[Origin, str]:
    """Split an http(s) URL into its origin and request target ("/path?query")."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"expected an http:// or https:// URL with a host, got {url!r}"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Origin(parts.scheme, parts.hostname, port), target


def encode_request(
    method: str,
    origin: Origin,
    target: str,
    headers: dict[str, str],
    body: bytes,
    user_agent: str = USER_AGENT,
) -> bytes:
    """Encode one HTTP/1.1 request (Host and User-Agent added unless given;
    an empty `user_agent` sends none, as k6's `userAgent: ""`)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}"]
    names = {name.lower() for name in headers}
    if "user-agent" not in names and user_agent:
        lines.append(f"User-Agent: {user_agent}")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    needs_length = body or method in ("POST", "PUT", "PATCH")
    if needs_length and "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def discards_body(response_type: Any, default: bool) -> bool:
    """k6's responseType: "none" discards the body, "text" and "binary" keep it,
    None leaves it to `default` (discardResponseBodies). ValueError otherwise."""
    if response_type is None:
        return default
    if response_type not in RESPONSE_TYPES:
        raise ValueError(
            f"expected one of {', '.join(RESPONSE_TYPES)}, got {response_type!r}"
        )
    return response_type == "none"


def expected_statuses(spec: Any) -> frozenset:
    """k6's expectedStatuses: ints and {"min": a, "max": b} ranges -> a set."""
    statuses = set()
    for item in spec:
        if isinstance(item, dict):
            statuses.update(range(int(item["min"]), int(item["max"]) + 1))
        else:
            statuses.add(int(item))
    return frozenset(statuses)


class _Collector:
    """Parser callbacks of the lazy full parse: headers and body of the last message."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def on_message_begin(self) -> None:
        self.headers = []  # a 1xx interim response is replaced by the final one
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)


def _parse_full(raw: list[bytes]) -> _Collector:
    collector = _Collector()
    parser = HttpResponseParser(collector)
    try:
        for chunk in raw:
            parser.feed_data(chunk)
    except HttpParserError:
        pass  # the lean parser accepted these bytes; keep what was parsed
    return collector


class Response:
    """What a request got: status (0 on error), headers, body, error, timings (ms)."""

    __slots__ = (
        "_json",
        "_parsed",
        "_phases",
        "_raw",
        "discarded",
        "error",
        "error_code",
        "received",
        "sent",
        "status",
        "url",
    )

    def __init__(
        self,
        status: int,
        raw: list[bytes],
        phases: tuple[int, int, int, int, int, int],
        sent: int,
        received: int,
        error: str = "",
        error_code: int = 0,
    ) -> None:
        self.status = status
        self._raw = raw
        self._phases = phases
        self.sent = sent
        self.received = received
        self.error = error
        self.error_code = error_code
        self.url = ""
        self._parsed: _Collector | None = None
        self._json: Any = _UNSET
        self.discarded = False  # k6's responseType "none": body is None (k6's null)

    def _full(self) -> _Collector:
        if self._parsed is None:
            self._parsed = _parse_full(self._raw)
        return self._parsed

    @property
    def headers(self) -> dict[str, str]:
        """Response headers, names lower-cased (repeated ones joined by ", ")."""
        result: dict[str, str] = {}
        for name, value in self._full().headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            result[key] = f"{result[key]}, {text}" if key in result else text
        return result

    def header_values(self, name: str) -> list[str]:
        """Every value of one header (e.g. each Set-Cookie), in order."""
        wanted = name.lower().encode("latin-1")
        return [
            value.decode("latin-1")
            for key, value in self._full().headers
            if key.lower() == wanted
        ]

    @property
    def body(self) -> bytes | None:
        """The whole response body (de-chunked); None when discarded, as k6's null."""
        if self.discarded:
            return None
        return b"".join(self._full().body)

    def text(self) -> str | None:
        """The body decoded as UTF-8 (invalid bytes replaced); None when discarded."""
        body = self.body
        return None if body is None else body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON (ValueError when it is not JSON or discarded)."""
        if self._json is _UNSET:
            body = self.body
            if body is None:
                raise ValueError(
                    "the response body was discarded (discardResponseBodies or "
                    'responseType "none")'
                )
            self._json = jsonlib.loads(body)
        return self._json

    @property
    def timings(self) -> dict[str, float]:
        """k6's res.timings in milliseconds."""
        blocked, connecting, tls, sending, waiting, receiving = self._phases
        return {
            "blocked": blocked / 1e6,
            "connecting": connecting / 1e6,
            "tls_handshaking": tls / 1e6,
            "sending": sending / 1e6,
            "waiting": waiting / 1e6,
            "receiving": receiving / 1e6,
            "duration": (sending + waiting + receiving) / 1e6,
        }

    def __repr__(self) -> str:
        return f"<Response status={self.status} error={self.error!r}>"


_UNSET = object()


class TransportError(Exception):
    """A transport failure with k6's error text and error_code."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def _failure(error: BaseException, connecting: bool = False) -> TransportError:
    """Map a socket/TLS/parser exception to k6's error text and code."""
    if isinstance(error, TransportError):
        result = error
    elif isinstance(error, TimeoutError):
        result = (
            TransportError(1211, "dial: i/o timeout")
            if connecting
            else TransportError(1050, "request timeout")
        )
    elif isinstance(error, socket.gaierror):
        result = TransportError(1101, f"lookup: no such host ({error})")
    elif isinstance(error, ConnectionRefusedError):
        result = TransportError(1212, "dial: connection refused")
    elif isinstance(error, ssl.SSLCertVerificationError):
        result = TransportError(1310, f"tls: {error.verify_message or error}")
    elif isinstance(error, ssl.SSLError):
        result = TransportError(1300, f"tls: {error}")
    elif isinstance(error, BrokenPipeError):
        result = TransportError(1201, "write: broken pipe")
    elif isinstance(error, ConnectionResetError):
        result = TransportError(1220, "read: connection reset by peer")
    elif isinstance(error, HttpParserError):
        result = TransportError(1000, f"malformed HTTP response: {error}")
    elif isinstance(error, OSError):
        result = TransportError(
            1210 if connecting else 1200, f"{error.strerror or error}"
        )
    else:
        result = TransportError(1000, f"{type(error).__name__}: {error}")
    return result


_EOF = TransportError(1000, "EOF: connection closed by the server")


def failed_response(
    conn: "_Connection | None", error: BaseException, setup: tuple, sent: int
) -> Response:
    """The Response of a request that failed (status 0, k6's error and code)."""
    if conn is not None:
        conn.close()
    failure = _failure(error)
    return Response(0, [], (*setup, 0, 0, 0), sent, 0, failure.text, failure.code)


class _HeadSink:
    """Parser callbacks for a HEAD request: the response ends with its headers."""

    def __init__(self, conn: "_Connection") -> None:
        self.conn = conn

    def on_headers_complete(self) -> None:
        self.conn.on_message_complete()


def _final_head(raw: bytes) -> bytes | None:
    """The bytes up to the end of the final (non-1xx) response head, or None
    while that head has not all arrived."""
    start = 0
    while (end := raw.find(b"\r\n\r\n", start)) >= 0:
        end += 4
        if raw[start + 9 : start + 10] != b"1":
            return raw[:end]
        start = end
    return None


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, budget: Any = None) -> None:
        self.loop = loop
        self.budget = budget  # the run's ConnectionBudget: one slot while open
        self.made = False
        self.transport: asyncio.Transport | None = None
        self.alive = False
        self.parser = HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.raw: list[bytes] = []
        self.received = 0
        self.first_ns = 0
        self.done_ns = 0
        self.head_only = False
        self.discard = False  # this exchange's body is not stored
        self.head_done = False  # discarding: self.raw is the final head, no more
        self.deadline = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.alive = True
        self.made = True

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            self.close()  # unsolicited bytes (e.g. a 408 on an idle connection)
            return
        if not self.first_ns:
            self.first_ns = perf_counter_ns()
        self.received += len(data)
        if not self.head_done:
            self.raw.append(data)
            if self.discard and self.received > DISCARD_AFTER:
                head = _final_head(b"".join(self.raw))
                if head is not None:  # the body is dropped from here on
                    self.raw = [head]
                    self.head_done = True
        try:
            self.parser.feed_data(data)
        except HttpParserError as error:
            self._fail(_failure(error))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self.budget is not None:
            self.budget, budget = None, self.budget
            budget.give()
        if self.waiter is None:
            return
        if exc is None and self._ends_at_eof():
            self.on_message_complete()
        else:
            self._fail(_failure(exc) if exc is not None else _EOF)

    # -- the one httptools callback of the lean parser
    def on_message_complete(self) -> None:
        waiter = self.waiter
        if waiter is None:
            return
        parser = self.parser
        status = parser.get_status_code()
        if status < 200 and status != 101:
            return  # an interim 1xx response: the final one follows
        self.done_ns = perf_counter_ns()
        self.waiter = None
        if not parser.should_keep_alive():
            self.close()
        elif self.head_only:
            self.parser = HttpResponseParser(self)
        if not waiter.done():
            waiter.set_result(status)

    # -- our side
    def send(
        self, data: bytes, deadline: int, head_only: bool, discard: bool = False
    ) -> asyncio.Future:
        """Write one request; the future gets the status code. With `discard` the
        response body is read and counted but not stored."""
        self.raw = []
        self.received = 0
        self.first_ns = 0
        self.head_only = head_only
        self.head_done = False
        self.discard = discard and not head_only
        if head_only:
            self.parser = HttpResponseParser(_HeadSink(self))
        self.waiter = waiter = self.loop.create_future()
        self.deadline = deadline
        if self.timer is None or deadline < self.timer_at:
            self._arm(deadline)
        self.transport.write(data)  # type: ignore[union-attr]
        return waiter

    def response(
        self,
        status: int,
        setup: tuple[int, int, int],
        start: int,
        written: int,
        sent: int,
    ) -> Response:
        """The Response of the exchange that just ended on this connection."""
        done = self.done_ns
        first = self.first_ns or done
        phases = (*setup, written - start, first - written, done - first)
        response = Response(status, self.raw, phases, sent, self.received)
        response.discarded = self.discard
        return response

    def _arm(self, deadline: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = deadline
        delay = max(0.0, (deadline - perf_counter_ns()) / 1e9)
        self.timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        """Lazy deadline: one timer per connection, re-armed only when it fires."""
        self.timer = None
        if self.waiter is None:
            return
        if perf_counter_ns() >= self.deadline:
            self._fail(TransportError(1050, "request timeout"))
        else:
            self._arm(self.deadline)

    def _fail(self, failure: TransportError) -> None:
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(failure)

    def _ends_at_eof(self) -> bool:
        """True when the response got its head and has neither length nor chunks."""
        raw = b"".join(self.raw)
        if b"\r\n\r\n" not in raw:
            return False
        for name, value in _parse_full([raw]).headers:
            lower = name.lower()
            if lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return False
        return True

    def release_if_unmade(self) -> None:
        """Give back the budget slot of a connection that never opened."""
        if not self.made and self.budget is not None:
            self.budget, budget = None, self.budget
            budget.give()

    def close(self) -> None:
        """Close the socket now (no lingering)."""
        self.alive = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.abort()


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> str:
    """An IP address for host, cached for 5 minutes like k6's DNS cache."""
    key = (host, port)
    cached = _dns_cache.get(key)
    now = time.monotonic()
    if cached is not None and cached[0] > now:
        return cached[1]
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise TransportError(1101, f"lookup {host}: no such host")
    address = infos[0][4][0]
    _dns_cache[key] = (now + _DNS_TTL, address)
    return address


class HttpClient:
    """One VU's HTTP/1.1 connections; `exchange` sends pre-encoded requests."""

    def __init__(self, tls_verify: bool = True) -> None:
        self._conns: dict[Origin, list[_Connection]] = {}
        self._tls_verify = tls_verify
        self._ssl: ssl.SSLContext | None = None
        self.connections_opened = 0

    def free(self, origin: Origin) -> "_Connection | None":
        """A connected, idle connection to `origin`, if this client has one."""
        for conn in self._conns.get(origin, ()):
            if conn.waiter is None and conn.alive:
                return conn
        return None

    async def exchange(
        self,
        origin: Origin,
        data: bytes,
        timeout: float,
        head_only: bool = False,
        discard: bool = False,
    ) -> Response:
        """Send `data` to `origin` and return the response (errors in it, not raised);
        with `discard` its body is not kept (`Response.body` is None)."""
        conn = self.free(origin)
        blocked = connecting = tls = 0
        try:
            if conn is None:
                start = perf_counter_ns()
                deadline = start + int(timeout * 1e9)
                conn, blocked, connecting, tls = await self._connect(origin, deadline)
            start = perf_counter_ns()
            waiter = conn.send(data, start + int(timeout * 1e9), head_only, discard)
            written = perf_counter_ns()
            status = await waiter
        except asyncio.CancelledError:
            if conn is not None:
                conn.close()
            raise
        except (
            TransportError,
            OSError,
            RuntimeError,
        ) as error:  # RuntimeError: dying transport
            return failed_response(conn, error, (blocked, connecting, tls), len(data))
        return conn.response(
            status, (blocked, connecting, tls), start, written, len(data)
        )

    async def _connect(
        self, origin: Origin, deadline: int
    ) -> tuple[_Connection, int, int, int]:
        """Open a connection; returns it with blocked, connecting, TLS times (ns)."""
        loop = asyncio.get_running_loop()
        start = perf_counter_ns()
        address = await _resolve(loop, origin.host, origin.port)
        dialing = perf_counter_ns()
        budget = current_budget()
        if budget is not None and not budget.take():
            raise TransportError(1210, budget.error())
        conn = _Connection(loop, budget)
        remaining = max(0.001, (deadline - dialing) / 1e9)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for may swallow a cancel
            async with asyncio.timeout(remaining):
                await loop.create_connection(lambda: conn, address, origin.port)
        except (OSError, TimeoutError) as error:
            conn.release_if_unmade()
            raise _failure(error, connecting=True) from None
        except BaseException:
            conn.release_if_unmade()
            raise
        connected = perf_counter_ns()
        tls = 0
        if origin.scheme == "https":
            try:
                async with asyncio.timeout(max(0.001, (deadline - connected) / 1e9)):
                    transport = await loop.start_tls(
                        conn.transport,
                        conn,
                        self._tls_context(),
                        server_hostname=origin.host,
                    )
            except (OSError, TimeoutError, ssl.SSLError) as error:
                conn.close()
                raise _failure(error) from None
            conn.transport = transport
            tls = perf_counter_ns() - connected
        conns = [c for c in self._conns.get(origin, ()) if c.alive]
        conns.append(conn)
        self._conns[origin] = conns
        self.connections_opened += 1
        return conn, dialing - start, connected - dialing, tls

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            context = ssl.create_default_context()
            if not self._tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._ssl = context
        return self._ssl

    def close(self) -> None:
        """Close every connection of this client."""
        for conns in self._conns.values():
            for conn in conns:
                conn.close()
        self._conns.clear()


# -- redirects, k6's (Go net/http's) way -------------------------------------------


class Hop(NamedTuple):
    """The next request of a redirect chain."""

    origin: Origin
    data: bytes
    url: str
    method: str


def next_hop(data: bytes, url: str, response: Response) -> Hop | None:
    """The request that follows redirect `response` to `data` sent to `url`.

    None when `response` is no redirect to follow (not 301/302/303/307/308, no
    Location, or a Location that is no http(s) URL). 301/302/303 turn any
    method but GET/HEAD into a GET without body; 307/308 keep method and body.
    Credentials and cookies are not sent to another host; Referer is set.
    """
    if response.status not in REDIRECT_STATUSES:
        return None
    location = response.headers.get("location", "").strip()
    if not location:
        return None
    next_url = urljoin(url, location).split("#", 1)[0]
    try:
        origin, target = parse_url(next_url)
    except ValueError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *lines = head.split(b"\r\n")
    method = request_line.split(b" ", 1)[0].decode()
    if response.status in _BODYLESS and method not in ("GET", "HEAD"):
        method, body = "GET", b""
    same_host = urlsplit(url).hostname == origin.host
    kept = [
        f"{method} {target} HTTP/1.1".encode(),
        b"Host: " + origin.host_header.encode(),
    ]
    for line in lines:
        name = line.split(b":", 1)[0].strip().lower()
        if name == b"host" or (name == b"content-length" and not body):
            continue
        if name in _SENSITIVE and not same_host:
            continue
        kept.append(line)
    has_referer = any(line.lower().startswith(b"referer:") for line in lines)
    if not has_referer and not (url.startswith("https:") and origin.scheme == "http"):
        kept.append(b"Referer: " + url.encode())
    return Hop(origin, b"\r\n".join(kept) + b"\r\n\r\n" + body, next_url, method)


async def follow_redirects(
    client: HttpClient,
    response: Response,
    data: bytes,
    url: str,
    limit: int | None,
    timeout: float,
    record: Callable[[Response, Hop], None],
    discard: bool = False,
) -> Response:
    """Follow `response`'s redirects, up to `limit` of them (None: k6's default 10).

    Each hop is sent on the VU's connection to its origin and passed to
    `record(response, hop)`; the last response is returned. All hops share
    `timeout` (seconds left of the request's timeout). Past the limit, the last
    redirect is returned as it is, like k6, which then warns unless a limit was
    given. With `discard`, no hop's body is kept.
    """
    deadline = perf_counter_ns() + int(timeout * 1e9)
    first_url, hops = url, 0
    while (hop := next_hop(data, url, response)) is not None:
        if hops >= (DEFAULT_MAX_REDIRECTS if limit is None else limit):
            if limit is None:
                _warn_stopped(first_url, hops)
            break
        remaining = max(0.001, (deadline - perf_counter_ns()) / 1e9)
        response = await client.exchange(
            hop.origin, hop.data, remaining, hop.method == "HEAD", discard
        )
        response.url = hop.url
        record(response, hop)
        data, url, hops = hop.data, hop.url, hops + 1
    return response


def _warn_stopped(url: str, hops: int) -> None:
    """k6's warning when the default redirect limit stops a chain (once per URL)."""
    if url in _redirect_warnings or len(_redirect_warnings) >= 1000:
        return
    _redirect_warnings.add(url)
    logger.warning(
        "Stopped after %d redirects and returned the redirection (%s); set "
        '"redirects" on the request or "maxRedirects" in the spec to silence this',
        hops,
        url,
    )
