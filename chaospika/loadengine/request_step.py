"""The `request` step (k6's http.request): built once, rendered per iteration.

A request without placeholders is a single bytes object sent as is; otherwise
only the dynamic parts are formatted per iteration. Redirects are followed and
recorded hop by hop like k6; checks and captures run on the final response.
With k6's discardResponseBodies (or the request's responseType "none") the body
is read and counted but not kept, so a check or capture that reads the body is
refused when the spec is checked.
"""

import asyncio
import itertools
import re
from time import perf_counter_ns
from typing import Any

from chaospika.loadengine.checks import Check, _compile_capture, _compile_check
from chaospika.loadengine.cookies import has_set_cookie
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.http1 import (
    DEFAULT_EXPECTED,
    REDIRECT_STATUSES,
    USER_AGENT,
    Hop,
    Response,
    TransportError,
    discards_body,
    expected_statuses,
    failed_response,
    follow_redirects,
    parse_url,
)
from chaospika.loadengine.step_common import (
    _Context,
    _headers,
    _list,
    _static_text,
    _string_map,
)
from chaospika.loadengine.template import (
    Template,
    compile_json,
    compile_text,
    concat_text,
    resolve_static,
)
from chaospika.loadengine.units import parse_duration
from chaospika.loadengine.validate import (
    reject_unknown,
    require_int,
    require_mapping,
    require_text,
)
from chaospika.loadengine.vu import (
    VU,
    HttpRecorder,
    http_recorder,
    http_tags,
    record_response,
)

__all__ = ["DEFAULT_TIMEOUT", "METHODS"]


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_TIMEOUT = "60s"  # k6's default request timeout
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)\Z"
)
_step_tokens = itertools.count(1)
_REUSED = (0, 0, 0)  # blocked, connecting, TLS of a kept-alive connection


class _RequestStep:
    """A compiled request: pre-encoded bytes or a renderer of only the dynamic parts."""

    def __init__(self, field: str, step: dict[str, Any], ctx: _Context) -> None:
        spec = require_mapping(f"{field}.request", step["request"])
        where = f"{field}.request"
        reject_unknown(
            where,
            spec,
            (
                "method",
                "url",
                "headers",
                "json",
                "body",
                "name",
                "timeout",
                "tags",
                "expectedStatuses",
                "redirects",
                "responseType",
            ),
        )
        method = spec.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise ScenarioError(
                f"{where}.method",
                f"expected one of {', '.join(METHODS)}, got {method!r}",
            )
        self.method = method = method.upper()
        self.head_only = method == "HEAD"
        url = resolve_static(
            f"{where}.url",
            require_text(f"{where}.url", spec.get("url")).strip(),
            ctx.scenario,
        )
        self.origin, target, prefix = _split_url(f"{where}.url", url, ctx.scenario)
        self.timeout = parse_duration(
            f"{where}.timeout", spec.get("timeout", DEFAULT_TIMEOUT), allow_zero=False
        )
        self.redirects: int | None = (  # None: the spec's maxRedirects
            require_int(f"{where}.redirects", spec["redirects"], 0)
            if "redirects" in spec
            else None
        )
        headers = _headers(f"{where}.headers", spec.get("headers", {}), ctx.scenario)
        body = self._body(where, spec, headers, ctx.scenario)
        self._compile_wire(target, headers, body, ctx.user_agent)

        self.discard = _discards(where, spec, ctx.discard_bodies)
        self.checks: list[Check] = []
        for i, item in enumerate(_list(f"{field}.checks", step.get("checks", []))):
            if self.discard:
                _refuse_body_use(f"{field}.checks[{i}]", item, spec)
            self.checks.append(_compile_check(f"{field}.checks[{i}]", item, ctx))
        self.captures = []
        for i, item in enumerate(_list(f"{field}.captures", step.get("captures", []))):
            if self.discard:
                _refuse_body_use(f"{field}.captures[{i}]", item, spec)
            self.captures.append(_compile_capture(f"{field}.captures[{i}]", item))
        if "expectedStatuses" in spec:
            self.expected = _expected(
                f"{where}.expectedStatuses", spec["expectedStatuses"]
            )
        else:
            self.expected = DEFAULT_EXPECTED  # checks never change it (as in k6)

        self.name = (
            _static_text(f"{where}.name", spec["name"], ctx.scenario)
            if "name" in spec
            else url
        )
        self.url_tag: str | None = None if "name" in spec else url
        self.url_prefix = prefix
        self.dynamic_url_tag = "name" not in spec and not target.static
        self.target = target
        self.base_tags = _string_map(f"{where}.tags", spec.get("tags", {}))
        if ctx.group:
            self.base_tags["group"] = ctx.group
        self.tag_key = next(_step_tokens) << 16  # + status (or error code)
        self.needs_response = bool(self.checks or self.captures)
        self.static = self.data is not None and not self.needs_response
        self.timeout_ns = int(self.timeout * 1e9)

    @staticmethod
    def _body(
        where: str, spec: dict[str, Any], headers: dict[str, Template], scenario: str
    ) -> Template | None:
        if "json" in spec and "body" in spec:
            raise ScenarioError(f"{where}.body", "use either json or body, not both")
        if "json" in spec:
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = Template.constant(
                    "application/json", "application/json"
                )
            return compile_json(f"{where}.json", spec["json"], scenario)
        if "body" in spec:
            if not isinstance(spec["body"], str):
                raise ScenarioError(
                    f"{where}.body", "expected a string (use json for JSON values)"
                )
            return compile_text(f"{where}.body", spec["body"], scenario)
        return None

    def _compile_wire(
        self,
        target: Template,
        headers: dict[str, Template],
        body: Template | None,
        user_agent: str = USER_AGENT,
    ) -> None:
        """Pre-encode the request, or compile one head template plus a body one."""
        parts: list[Any] = [f"{self.method} ", target, " HTTP/1.1\r\n"]
        parts.append(f"Host: {self.origin.host_header}\r\n")
        if user_agent and not any(name.lower() == "user-agent" for name in headers):
            parts.append(f"User-Agent: {user_agent}\r\n")
        for name, value in headers.items():
            parts.extend((f"{name}: ", value, "\r\n"))
        self.head = head = concat_text(parts)
        self.body = body
        self.data: bytes | None = None
        if head.static and (body is None or body.static):
            self.data = self._wire(head.value, body.value if body else None)

    def _wire(self, head: str, body: str | None) -> bytes:
        if body is None:
            if self.method in ("POST", "PUT", "PATCH"):
                return (head + "Content-Length: 0\r\n\r\n").encode()
            return (head + "\r\n").encode()
        payload = body.encode()
        return (head + f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload

    def render(self, vu: VU) -> bytes:
        """The request bytes for this VU and iteration."""
        head = self.head.value if self.head.static else self.head.render(vu)
        body = self.body
        if body is None:
            return self._wire(head, None)
        return self._wire(head, body.value if body.static else body.render(vu))

    async def __call__(self, vu: VU) -> None:
        data = self.data
        if data is None:
            data = self.render(vu)
        if vu.cookies.cookies:  # k6's per-VU jar: the cookies earlier responses set
            origin = self.origin
            data = vu.cookies.apply(origin.host, origin.scheme == "https", data)
        conn = vu.client.free(self.origin)
        if conn is None:  # first request, or after a failure: connect first
            response = await vu.client.exchange(
                self.origin, data, self.timeout, self.head_only, self.discard
            )
            await self._complete(vu, response, data)
            return
        start = perf_counter_ns()
        waiter = conn.send(data, start + self.timeout_ns, self.head_only, self.discard)
        written = perf_counter_ns()
        try:
            status = await waiter
        except asyncio.CancelledError:
            conn.close()
            raise
        except (TransportError, OSError, RuntimeError) as error:
            self._record(vu, failed_response(conn, error, _REUSED, len(data)), data)
            return
        if (
            self.needs_response
            or self.dynamic_url_tag
            or (status in REDIRECT_STATUSES and self.redirects != 0)
            or (conn.raw and has_set_cookie(conn.raw[0]))
        ):
            response = conn.response(status, _REUSED, start, written, len(data))
            await self._complete(vu, response, data)
            return
        entry = vu.recorders.get(self.tag_key + status)
        if entry is None or entry[0] != vu.registry.epoch:
            entry = self._recorder(vu, status, 0, "")
        done = conn.done_ns
        first = conn.first_ns or done
        entry[1](
            entry[2],
            len(data),
            conn.received,
            written - start,
            first - written,
            done - first,
        )

    async def _complete(self, vu: VU, response: Response, data: bytes) -> None:
        """Record the response, follow its redirects, then check and capture."""
        if response.status:
            path = data.split(b" ", 2)[1].decode("latin-1")
            vu.cookies.store_response(self.origin.host, path, response)
        if response.status not in REDIRECT_STATUSES or self.redirects == 0:
            self._record(vu, response, data)
            return
        self._record_metrics(vu, response, data)
        url = self.url_prefix + data.split(b" ", 2)[1].decode()
        limit = vu.max_redirects if self.redirects is None else self.redirects

        def record(hop_response: Response, hop: Hop) -> None:
            self._record_hop(vu, hop_response, hop)

        spent = sum(response._phases) / 1e9
        response = await follow_redirects(
            vu.client,
            response,
            data,
            url,
            limit,
            self.timeout - spent,
            record,
            self.discard,
        )
        self._check_and_capture(vu, response)

    def _record_hop(self, vu: VU, response: Response, hop: Hop) -> None:
        """Record one redirect hop: named like the request, or by its own URL."""
        status = response.status
        named = self.url_tag is None
        tags = http_tags(
            self._base(vu),
            self.name if named else hop.url,
            hop.method,
            status,
            response.error_code,
            response.error,
            status in self.expected,
            None if named else hop.url,
        )
        record_response(vu.registry.add, tags, status not in self.expected, response)

    def _record(self, vu: VU, response: Response, data: bytes) -> None:
        """Record a response's metrics, then run the checks and captures."""
        self._record_metrics(vu, response, data)
        self._check_and_capture(vu, response)

    def _check_and_capture(self, vu: VU, response: Response) -> None:
        for check in self.checks:
            check(vu, response)
        for capture in self.captures:
            capture(vu, response)

    def _record_metrics(self, vu: VU, response: Response, data: bytes) -> None:
        """Record a response's http_* metrics with this step's tags."""
        status = response.status
        if self.dynamic_url_tag:
            url = self.url_prefix + data.split(b" ", 2)[1].decode()
            tags = http_tags(
                self._base(vu),
                self.name,
                self.method,
                status,
                response.error_code,
                response.error,
                status in self.expected,
                url,
            )
            record_response(
                vu.registry.add, tags, status not in self.expected, response
            )
            return
        entry = vu.recorders.get(self.tag_key + (status or response.error_code))
        if entry is None or entry[0] != vu.registry.epoch:
            entry = self._recorder(vu, status, response.error_code, response.error)
        entry[1](entry[2], response.sent, response.received, *_timings(response))

    def _recorder(
        self, vu: VU, status: int, error_code: int, error: str
    ) -> tuple[int, HttpRecorder, bool]:
        """(registry epoch, recorder, failed) of this step's responses with `status`."""
        key = self.tag_key + (status or error_code)
        tags = vu.tag_cache.get(key)
        if tags is None:
            tags = self._tags(vu, status, error_code, error)
        registry = vu.registry
        entry = (
            registry.epoch,
            http_recorder(registry, tags),
            status not in self.expected,
        )
        vu.cache_recorder(key, entry)
        return entry

    def _tags(self, vu: VU, status: int, error_code: int, error: str) -> dict[str, str]:
        tags = http_tags(
            self._base(vu),
            self.name,
            self.method,
            status,
            error_code,
            error,
            status in self.expected,
            self.url_tag,
        )
        vu.cache_tags(self.tag_key + (status or error_code), tags)
        return tags

    def _base(self, vu: VU) -> dict[str, str]:
        return {**vu.tags, **self.base_tags} if self.base_tags else vu.tags


def _discards(where: str, spec: dict[str, Any], discard_bodies: bool) -> bool:
    """Whether this request drops its body: its responseType, else the spec's
    discardResponseBodies."""
    if "responseType" not in spec:
        return discard_bodies
    try:
        return discards_body(spec["responseType"], discard_bodies)
    except ValueError as error:
        raise ScenarioError(f"{where}.responseType", str(error)) from None


def _refuse_body_use(field: str, item: Any, request: dict[str, Any]) -> None:
    """A check or capture that reads the body of a request that discards it."""
    if not isinstance(item, dict) or not ({"jsonpath", "body_contains"} & set(item)):
        return  # status checks and header captures need no body
    if request.get("responseType") == "none":
        why = 'the request\'s responseType "none" discards the body'
    else:
        why = (
            "discardResponseBodies is true, so the body is discarded; "
            'set "responseType": "text" on this request to keep it'
        )
    raise ScenarioError(field, f"reads the response body, but {why}")


def _timings(response: Response) -> tuple[int, int, int, int, int, int]:
    """sending, waiting, receiving, blocked, connecting, TLS (ns): a recorder's order."""
    blocked, connecting, tls, sending, waiting, receiving = response._phases
    return sending, waiting, receiving, blocked, connecting, tls


def _split_url(field: str, url: str, scenario: str) -> tuple[Any, Template, str]:
    """(origin, target template, "scheme://authority") of a request URL."""
    match = _URL.match(url)
    if match is None or match.group("scheme").lower() not in ("http", "https"):
        raise ScenarioError(field, f"expected an http:// or https:// URL, got {url!r}")
    authority = compile_text(field, match.group("authority"), scenario)
    if not authority.static:
        raise ScenarioError(
            field,
            "the host and port cannot use per-iteration templates "
            "({{env.NAME}} is fine; use exec for fully dynamic URLs)",
        )
    prefix = f"{match.group('scheme').lower()}://{authority.value}"
    try:
        origin, _ = parse_url(prefix + "/")
    except ValueError as error:
        raise ScenarioError(field, str(error)) from None
    rest = match.group("rest").split("#", 1)[0] or "/"
    if not rest.startswith("/"):
        rest = "/" + rest
    if " " in rest:
        raise ScenarioError(field, "spaces must be percent-encoded (%20)")
    return origin, compile_text(field, rest, scenario), prefix


def _expected(field: str, value: Any) -> frozenset:
    items = _list(field, value)
    for i, item in enumerate(items):
        if isinstance(item, dict):
            reject_unknown(f"{field}[{i}]", item, ("min", "max"))
            low, high = item.get("min"), item.get("max")
            if not all(
                isinstance(v, int) and not isinstance(v, bool) for v in (low, high)
            ):
                raise ScenarioError(
                    f"{field}[{i}]", 'expected {"min": int, "max": int}'
                )
            if not 100 <= low <= high <= 599:
                raise ScenarioError(
                    f"{field}[{i}]", "expected 100 <= min <= max <= 599"
                )
        elif (
            isinstance(item, bool)
            or not isinstance(item, int)
            or not 100 <= item <= 599
        ):
            raise ScenarioError(
                f"{field}[{i}]", f"expected a status code, got {item!r}"
            )
    return expected_statuses(items)
