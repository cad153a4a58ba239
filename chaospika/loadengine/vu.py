"""A virtual user: its connections, captured vars, and what it records.

`VU` is what compiled steps and `exec` functions ("module:function", an
`async def function(vu)`) get. Everything it records goes through the
registry's `add(name, value, tags)`; tag dicts are built once and reused.
"""

import json as jsonlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from chaospika.loadengine.cookies import CookieJar
from chaospika.loadengine.http1 import (
    DEFAULT_EXPECTED,
    REDIRECT_STATUSES,
    USER_AGENT,
    Hop,
    HttpClient,
    Response,
    discards_body,
    encode_request,
    expected_statuses,
    follow_redirects,
    parse_url,
)
from chaospika.loadengine.ws import WsSession

__all__ = [
    "CAPTURE_LIMIT",
    "HTTP_METRICS",
    "VU",
    "CaptureList",
    "VuHttp",
    "capture_warnings",
    "http_recorder",
    "http_tags",
    "merge_captures",
    "record_http",
    "record_response",
]

logger = logging.getLogger("chaostoolkit")
_TAG_CACHE_LIMIT = 4096
CAPTURE_LIMIT = 1_000_000  # values kept per capture (scenario and name)


def http_tags(
    base: dict[str, str],
    name: str,
    method: str,
    status: int,
    error_code: int,
    error: str,
    expected: bool,
    url: str | None = None,
) -> dict[str, str]:
    """k6's tags of one request's samples (url is the name for a named request)."""
    tags = dict(base)
    tags["name"] = name
    tags["method"] = method
    tags["status"] = str(status)
    tags["expected_response"] = "true" if expected else "false"
    tags["url"] = name if url is None else url  # k6: a named request's url is its name
    if status:
        tags["proto"] = "HTTP/1.1"
    if error_code:
        tags["error_code"] = str(error_code)
        tags["error"] = error
    elif status >= 400:
        tags["error_code"] = str(1000 + status)
    return tags


def record_http(
    add: Any,
    tags: dict[str, str],
    failed: bool,
    sent: int,
    received: int,
    sending: int,
    waiting: int,
    receiving: int,
    blocked: int = 0,
    connecting: int = 0,
    tls: int = 0,
) -> None:
    """Record k6's http_* metrics and data_* counters of one request (times in ns)."""
    add("http_reqs", 1, tags)
    add("http_req_duration", (sending + waiting + receiving) / 1e6, tags)
    add("http_req_blocked", blocked / 1e6, tags)
    add("http_req_connecting", connecting / 1e6, tags)
    add("http_req_tls_handshaking", tls / 1e6, tags)
    add("http_req_sending", sending / 1e6, tags)
    add("http_req_waiting", waiting / 1e6, tags)
    add("http_req_receiving", receiving / 1e6, tags)
    add("http_req_failed", 1 if failed else 0, tags)
    add("data_sent", sent, tags)
    add("data_received", received, tags)


HTTP_METRICS = (
    "http_reqs",
    "http_req_duration",
    "http_req_blocked",
    "http_req_connecting",
    "http_req_tls_handshaking",
    "http_req_sending",
    "http_req_waiting",
    "http_req_receiving",
    "http_req_failed",
    "data_sent",
    "data_received",
)
HttpRecorder = Callable[[bool, int, int, int, int, int, int, int, int], None]


def http_recorder(registry: Any, tags: dict[str, str]) -> HttpRecorder:
    """A `record(failed, sent, received, sending, waiting, receiving, blocked,
    connecting, tls)` for requests with these (never changed) tags: what
    `record_http` records, without looking up metrics and sub-metrics each time.
    Valid while `registry.epoch` keeps its value."""
    (
        reqs,
        duration,
        blocked_ms,
        connecting_ms,
        tls_ms,
        sending_ms,
        waiting_ms,
        receiving_ms,
        failures,
        data_sent,
        data_received,
    ) = registry.recorders(HTTP_METRICS, tags)

    def record(
        failed: bool,
        sent: int,
        received: int,
        sending: int,
        waiting: int,
        receiving: int,
        blocked: int = 0,
        connecting: int = 0,
        tls: int = 0,
    ) -> None:
        reqs(1)
        duration((sending + waiting + receiving) / 1e6)
        blocked_ms(blocked / 1e6)
        connecting_ms(connecting / 1e6)
        tls_ms(tls / 1e6)
        sending_ms(sending / 1e6)
        waiting_ms(waiting / 1e6)
        receiving_ms(receiving / 1e6)
        failures(1 if failed else 0)
        data_sent(sent)
        data_received(received)

    return record


def record_response(
    add: Any, tags: dict[str, str], failed: bool, response: Response
) -> None:
    """record_http for a Response."""
    blocked, connecting, tls, sending, waiting, receiving = response._phases
    record_http(
        add,
        tags,
        failed,
        response.sent,
        response.received,
        sending,
        waiting,
        receiving,
        blocked,
        connecting,
        tls,
    )


class VuHttp:
    """`vu.http`: requests that record k6's metrics for this VU."""

    def __init__(self, vu: "VU", client: HttpClient) -> None:
        self._vu = vu
        self.client = client
        self._urls: dict[str, tuple] = {}

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        json: Any = None,
        body: Any = None,
        name: str | None = None,
        timeout: float = 10.0,
        tags: dict[str, str] | None = None,
        expected_statuses: Iterable[Any] | None = None,
        redirects: int | None = None,
        response_type: str | None = None,
    ) -> Response:
        """Send one request and record it; transport errors are in `Response.error`.

        Redirects are followed like k6 (each hop recorded) up to `redirects`,
        by default the spec's maxRedirects (10 unless set); 0 follows none.
        `response_type` is k6's responseType: "none" discards the body
        (`Response.body` is None), "text" or "binary" keep it; by default the
        spec's discardResponseBodies decides.
        """
        if redirects is not None and (
            isinstance(redirects, bool)
            or not isinstance(redirects, int)
            or redirects < 0
        ):
            raise ValueError(f"redirects: expected an int >= 0, got {redirects!r}")
        try:
            discard = discards_body(response_type, self._vu.discard_bodies)
        except ValueError as error:
            raise ValueError(f"response_type: {error}") from None
        method = method.upper()
        origin, target = self._parse(url)
        headers = dict(headers or {})
        jar = self._vu.cookies
        if jar:
            cookie = jar.header(origin.host, target, origin.scheme == "https")
            if cookie:
                given = next((k for k in headers if k.lower() == "cookie"), None)
                if given is None:
                    headers["Cookie"] = cookie
                else:
                    headers[given] = f"{headers[given]}; {cookie}"
        payload = b""
        if json is not None:
            payload = jsonlib.dumps(json, separators=(",", ":")).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        elif body is not None:
            payload = body.encode() if isinstance(body, str) else bytes(body)
        data = encode_request(
            method, origin, target, headers, payload, self._vu.user_agent
        )
        response = await self.client.exchange(
            origin, data, timeout, method == "HEAD", discard
        )
        response.url = url
        if response.status:
            jar.store_response(origin.host, target, response)
        expected = (
            DEFAULT_EXPECTED
            if expected_statuses is None
            else _expected_set(expected_statuses)
        )
        self._record(response, method, url, name, tags, expected)
        if response.status in REDIRECT_STATUSES:
            if redirects is None:
                redirects = self._vu.max_redirects

            def record(hop_response: Response, hop: Hop) -> None:
                self._record(hop_response, hop.method, hop.url, name, tags, expected)

            spent = sum(response._phases) / 1e9
            response = await follow_redirects(
                self.client,
                response,
                data,
                url,
                redirects,
                timeout - spent,
                record,
                discard,
            )
        return response

    def _record(
        self,
        response: Response,
        method: str,
        url: str,
        name: str | None,
        tags: dict[str, str] | None,
        expected: frozenset,
    ) -> None:
        ok = response.status in expected
        vu = self._vu
        key = (
            "http",
            method,
            name,
            url if name is None else None,
            response.status,
            response.error_code,
            ok,
            tuple(sorted(tags.items())) if tags else None,
        )
        sample_tags = vu.tag_cache.get(key)
        if sample_tags is None:
            base = {**vu.tags, **tags} if tags else vu.tags
            sample_tags = http_tags(
                base,
                name or url,
                method,
                response.status,
                response.error_code,
                response.error,
                ok,
                url if name is None else None,
            )
            vu.cache_tags(key, sample_tags)
        record_response(vu.registry.add, sample_tags, not ok, response)

    def _parse(self, url: str) -> tuple:
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = parse_url(url)
            if len(self._urls) > 1024:
                self._urls.clear()
            self._urls[url] = parsed
        return parsed


class CaptureList(list):
    """A capture's values (at most CAPTURE_LIMIT) and how many were dropped."""

    dropped = 0

    def drop(self, label: str, count: int = 1) -> None:
        """Count `count` values not kept; warn the first time."""
        if not self.dropped:
            logger.warning(
                "capture %s: more than %d values, later ones are counted, not kept",
                label,
                CAPTURE_LIMIT,
            )
        self.dropped += count


def merge_captures(
    into: dict[str, list], values: dict[str, list], scenario: str
) -> None:
    """Add one worker's captures of `scenario` to `into`, keeping the cap."""
    for name, items in values.items():
        merged = into.get(name)
        if merged is None:
            into[name] = merged = CaptureList()
        kept = items[: max(0, CAPTURE_LIMIT - len(merged))]
        merged.extend(kept)
        lost = len(items) - len(kept) + getattr(items, "dropped", 0)
        if lost:
            merged.drop(f"{scenario}.{name}", lost)


def capture_warnings(captures: dict[str, dict[str, list]]) -> list[str]:
    """One line per capture that dropped values."""
    return [
        f"capture {scenario}.{name}: {values.dropped} values dropped "
        f"(over {CAPTURE_LIMIT} kept)"
        for scenario, by_name in captures.items()
        for name, values in by_name.items()
        if getattr(values, "dropped", 0)
    ]


def _expected_set(spec: Iterable[Any]) -> frozenset:
    return spec if isinstance(spec, frozenset) else expected_statuses(spec)


class VU:
    """One virtual user of a scenario (ids start at 1, like k6's __VU)."""

    def __init__(
        self,
        id: int,
        scenario: str,
        registry: Any,
        captures: dict[str, list[Any]],
        tags: dict[str, str] | None = None,
        tls_verify: bool = True,
        max_redirects: int | None = None,
        user_agent: str = USER_AGENT,
        discard_bodies: bool = False,
    ) -> None:
        self.id = id
        self.user_agent = user_agent  # k6's userAgent option ("": no header)
        self.discard_bodies = discard_bodies  # k6's discardResponseBodies (vu.http)
        self.max_redirects = max_redirects  # None: k6's default 10, with a warning
        self.iteration = 0
        self.scenario = scenario
        self.registry = registry
        self.captures = captures
        # k6 tags every sample with its group: "" for the root group
        self.tags: dict[str, str] = {"group": "", **(tags or {}), "scenario": scenario}
        self.vars: dict[str, Any] = {}
        self.tag_cache: dict[Any, dict[str, str]] = {}
        self.recorders: dict[Any, tuple] = {}  # steps' (epoch, HttpRecorder, failed)
        self.cookies = CookieJar()  # k6's per-VU jar, emptied at each iteration
        self.client = HttpClient(tls_verify=tls_verify)
        self.http = VuHttp(self, self.client)
        self._sessions: list[WsSession] = []

    def cache_tags(self, key: Any, tags: dict[str, str]) -> None:
        """Keep a built tag dict for reuse (bounded)."""
        if len(self.tag_cache) >= _TAG_CACHE_LIMIT:
            self.tag_cache.clear()
        self.tag_cache[key] = tags

    def cache_recorder(self, key: Any, entry: tuple) -> None:
        """Keep a step's recorder entry for reuse (bounded)."""
        if len(self.recorders) >= _TAG_CACHE_LIMIT:
            self.recorders.clear()
        self.recorders[key] = entry

    def check(self, name: str, ok: bool, group: str | None = None) -> bool:
        """Record one check in the `checks` rate (tag check=<name>); returns ok."""
        key = ("check", name, group)
        tags = self.tag_cache.get(key)
        if tags is None:
            tags = {**self.tags, "check": name}
            if group:
                tags["group"] = group
            self.cache_tags(key, tags)
        self.registry.add("checks", 1 if ok else 0, tags)
        return bool(ok)

    def capture(self, name: str, value: Any) -> None:
        """Keep `value` as this VU's var `name` and in the run's captures.

        The run keeps at most CAPTURE_LIMIT values per capture; later ones are
        counted in `CaptureList.dropped` (one warning logged).
        """
        self.vars[name] = value
        values = self.captures.get(name)
        if values is None:
            self.captures[name] = values = CaptureList()
        if len(values) < CAPTURE_LIMIT:
            values.append(value)
        else:
            values.drop(f"{self.scenario}.{name}")

    def ws(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        latency_field: str | None = None,
        name: str | None = None,
    ) -> WsSession:
        """A WebSocket session: `async with vu.ws(url) as session:` send/recv/close."""
        tags = {**self.tags, "url": name or url}
        if not any(key.lower() == "user-agent" for key in headers or {}):
            headers = {**(headers or {}), "User-Agent": self.user_agent}
        session = WsSession(url, self.registry, tags, headers, latency_field)
        self._sessions.append(session)
        if len(self._sessions) > 64:
            self._sessions = [s for s in self._sessions if not s.closed]
        return session

    async def close(self) -> None:
        """Free this VU's connections (HTTP and WebSocket)."""
        self.client.close()
        for session in self._sessions:
            await session.close()
        self._sessions.clear()

    def __repr__(self) -> str:
        return f"<VU {self.id} of {self.scenario!r} iteration={self.iteration}>"
