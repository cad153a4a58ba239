"""Scenario steps: validated and compiled once, then run by every iteration.

`compile_steps` turns a list of steps (request, think, ws, group, batch) into one
`async def iteration(vu)`. Requests are pre-encoded: a request without
placeholders is a single bytes object sent as is; otherwise only the dynamic
parts are formatted per iteration. Every bad field raises ScenarioError naming
its dotted path, e.g. `scenarios.orders.steps[2].request.timeout`.
`compile_exec` resolves the `exec: "module:function"` escape hatch.
"""

import asyncio
import importlib
import inspect
import itertools
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Any

from chaospika.load.cookies import has_set_cookie
from chaospika.load.errors import ScenarioError
from chaospika.load.http1 import (
    DEFAULT_EXPECTED,
    REDIRECT_STATUSES,
    USER_AGENT,
    Hop,
    Response,
    TransportError,
    expected_statuses,
    failed_response,
    follow_redirects,
    parse_url,
)
from chaospika.load.template import (
    Template,
    TemplateError,
    compile_json,
    compile_text,
    compile_value,
    concat_text,
    resolve_static,
)
from chaospika.load.units import parse_duration
from chaospika.load.vu import (
    VU,
    HttpRecorder,
    http_recorder,
    http_tags,
    record_response,
)
from chaospika.load.ws_plan import WsPlan, run_ws_plan

__all__ = [
    "DEFAULT_TIMEOUT",
    "METHODS",
    "IterationFn",
    "compile_exec",
    "compile_jsonpath",
    "compile_steps",
]

logger = logging.getLogger("chaostoolkit")
IterationFn = Callable[[VU], Awaitable[None]]
Runner = Callable[[VU], Awaitable[None]]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_TIMEOUT = "60s"  # k6's default request timeout
_STEP_KINDS = ("request", "think", "ws", "group", "batch")
BATCH_LIMIT, BATCH_PER_HOST = 20, 6  # k6's batch and batchPerHost defaults
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)\Z"
)
_JSONPATH_PART = re.compile(
    r"\.(?P<name>[^.\[\]]+)|\[(?P<index>-?\d+)\]|\[(?P<quote>['\"])(?P<key>.*?)(?P=quote)\]"
)
_step_tokens = itertools.count(1)
_MISSING = object()
_REUSED = (0, 0, 0)  # blocked, connecting, TLS of a kept-alive connection
_warned: set = set()


class _Context:
    """Where a step sits: its scenario and group path ("" at the root)."""

    def __init__(
        self, scenario: str, group: str = "", user_agent: str = USER_AGENT
    ) -> None:
        self.scenario = scenario
        self.group = group
        self.user_agent = user_agent  # k6's userAgent option ("": no header)


# -- small validators -------------------------------------------------------------


def _mapping(field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(field, f"expected an object, got {value!r}")
    return value


def _only_keys(field: str, spec: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in spec:
        if key not in allowed:
            raise ScenarioError(
                f"{field}.{key}", f"unknown key (expected one of {', '.join(allowed)})"
            )


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(field, f"expected a non-empty string, got {value!r}")
    return value


def _count(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(field, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _static_text(field: str, value: Any, scenario: str) -> str:
    """A string that may use {{env.X}}/{{scenario}} but no per-iteration template."""
    template = compile_text(field, _text(field, value), scenario)
    if not template.static:
        raise ScenarioError(field, "must not use per-iteration templates here")
    return template.value


def _string_map(field: str, value: Any) -> dict[str, str]:
    """An object of names to strings (numbers accepted and converted)."""
    result = {}
    for key, item in _mapping(field, value).items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ScenarioError(f"{field}.{key}", f"expected a string, got {item!r}")
        result[str(key)] = str(item)
    return result


def _headers(field: str, value: Any, scenario: str) -> dict[str, Template]:
    headers = {}
    for name, text in _string_map(field, value).items():
        if not _TOKEN.match(name):
            raise ScenarioError(f"{field}.{name}", "is not a valid header name")
        if "\r" in text or "\n" in text:
            raise ScenarioError(f"{field}.{name}", "header values cannot contain CR/LF")
        headers[name] = compile_text(f"{field}.{name}", text, scenario)
    return headers


# -- JSONPath subset: $.a.b[0]['c d'] -----------------------------------------------


def compile_jsonpath(field: str, path: Any) -> tuple[Any, ...]:
    """Compile `$.a.b[0]["key"]` to a tuple of keys and indexes."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise ScenarioError(
            field, f"expected a JSONPath starting with '$', got {path!r}"
        )
    keys: list[Any] = []
    position = 1
    while position < len(path):
        match = _JSONPATH_PART.match(path, position)
        if match is None:
            raise ScenarioError(
                field,
                f"unsupported JSONPath {path!r} at {path[position:]!r} "
                "(supported: $.key, $[0], $['key'])",
            )
        if match.group("name") is not None:
            keys.append(match.group("name"))
        elif match.group("index") is not None:
            keys.append(int(match.group("index")))
        else:
            keys.append(match.group("key"))
        position = match.end()
    return tuple(keys)


def _lookup(document: Any, keys: tuple[Any, ...]) -> Any:
    for key in keys:
        if isinstance(key, int) and isinstance(document, list):
            if not -len(document) <= key < len(document):
                return _MISSING
            document = document[key]
        elif isinstance(document, dict) and str(key) in document:
            document = document[str(key)]
        else:
            return _MISSING
    return document


def _json_at(response: Response, keys: tuple[Any, ...]) -> Any:
    if response.status == 0:
        return _MISSING
    try:
        document = response.json()
    except ValueError:
        return _MISSING
    return _lookup(document, keys)


# -- checks and captures ------------------------------------------------------------

Check = Callable[[VU, Response], None]


def _compile_check(field: str, spec: Any, ctx: _Context) -> Check:
    """One check -> run(vu, response); it records to `checks` only (as in k6)."""
    spec = _mapping(field, spec)
    kinds = [k for k in ("status", "jsonpath", "body_contains") if k in spec]
    if len(kinds) != 1:
        raise ScenarioError(
            field, "a check needs exactly one of status, jsonpath, body_contains"
        )
    kind = kinds[0]
    group = ctx.group or None
    if kind == "status":
        _only_keys(field, spec, ("status", "name"))
        raw = spec["status"]
        values = raw if isinstance(raw, list) else [raw]
        if not values or any(
            isinstance(v, bool) or not isinstance(v, int) or not 100 <= v <= 599
            for v in values
        ):
            raise ScenarioError(
                f"{field}.status",
                f"expected a status code or a list of them, got {raw!r}",
            )
        statuses = frozenset(values)
        default = (
            f"status is {values[0]}" if len(values) == 1 else f"status in {values}"
        )
        name = _check_name(field, spec, default)

        def status_check(vu: VU, response: Response) -> None:
            vu.check(name, response.status in statuses, group)

        return status_check
    if kind == "body_contains":
        _only_keys(field, spec, ("body_contains", "name"))
        needle = compile_text(
            f"{field}.body_contains",
            _text(f"{field}.body_contains", spec["body_contains"]),
            ctx.scenario,
        )
        name = _check_name(field, spec, f"body contains {needle.source!r}")

        def body_check(vu: VU, response: Response) -> None:
            text = needle.value if needle.static else needle.render(vu)
            vu.check(name, text.encode() in response.body, group)

        return body_check
    _only_keys(field, spec, ("jsonpath", "exists", "equals", "name"))
    keys = compile_jsonpath(f"{field}.jsonpath", spec["jsonpath"])
    path = spec["jsonpath"]
    if ("exists" in spec) == ("equals" in spec):
        raise ScenarioError(
            field, "a jsonpath check needs exactly one of exists, equals"
        )
    if "exists" in spec:
        wanted = spec["exists"]
        if not isinstance(wanted, bool):
            raise ScenarioError(
                f"{field}.exists", f"expected true or false, got {wanted!r}"
            )
        name = _check_name(field, spec, f"{path} {'exists' if wanted else 'is absent'}")

        def exists_check(vu: VU, response: Response) -> None:
            vu.check(name, (_json_at(response, keys) is not _MISSING) == wanted, group)

        return exists_check
    expected = compile_value(f"{field}.equals", spec["equals"], ctx.scenario)
    shown = json.dumps(spec["equals"], ensure_ascii=False)
    name = _check_name(field, spec, f"{path} == {shown}")

    def equals_check(vu: VU, response: Response) -> None:
        value = expected.value if expected.static else expected.render(vu)
        vu.check(name, _json_at(response, keys) == value, group)

    return equals_check


def _check_name(field: str, spec: dict[str, Any], default: str) -> str:
    return _text(f"{field}.name", spec["name"]) if "name" in spec else default


def _compile_capture(field: str, spec: Any) -> Callable[[VU, Response], None]:
    spec = _mapping(field, spec)
    _only_keys(field, spec, ("name", "jsonpath", "header"))
    name = _text(f"{field}.name", spec.get("name"))
    if ("jsonpath" in spec) == ("header" in spec):
        raise ScenarioError(field, "a capture needs exactly one of jsonpath, header")
    if "header" in spec:
        header = _text(f"{field}.header", spec["header"]).lower()

        def capture_header(vu: VU, response: Response) -> None:
            value = response.headers.get(header)
            if value is not None:
                vu.capture(name, value)

        return capture_header
    keys = compile_jsonpath(f"{field}.jsonpath", spec["jsonpath"])

    def capture_json(vu: VU, response: Response) -> None:
        value = _json_at(response, keys)
        if value is not _MISSING:
            vu.capture(name, value)

    return capture_json


def _list(field: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(field, f"expected a list, got {value!r}")
    return value


# -- request ---------------------------------------------------------------------------


class _RequestStep:
    """A compiled request: pre-encoded bytes or a renderer of only the dynamic parts."""

    def __init__(self, field: str, step: dict[str, Any], ctx: _Context) -> None:
        spec = _mapping(f"{field}.request", step["request"])
        where = f"{field}.request"
        _only_keys(
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
            f"{where}.url", _text(f"{where}.url", spec.get("url")).strip(), ctx.scenario
        )
        self.origin, target, prefix = _split_url(f"{where}.url", url, ctx.scenario)
        self.timeout = parse_duration(
            f"{where}.timeout", spec.get("timeout", DEFAULT_TIMEOUT), allow_zero=False
        )
        self.redirects: int | None = (  # None: the spec's maxRedirects
            _count(f"{where}.redirects", spec["redirects"], 0)
            if "redirects" in spec
            else None
        )
        headers = _headers(f"{where}.headers", spec.get("headers", {}), ctx.scenario)
        body = self._body(where, spec, headers, ctx.scenario)
        self._compile_wire(target, headers, body, ctx.user_agent)

        self.checks: list[Check] = []
        for i, item in enumerate(_list(f"{field}.checks", step.get("checks", []))):
            self.checks.append(_compile_check(f"{field}.checks[{i}]", item, ctx))
        self.captures = [
            _compile_capture(f"{field}.captures[{i}]", item)
            for i, item in enumerate(
                _list(f"{field}.captures", step.get("captures", []))
            )
        ]
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
                self.origin, data, self.timeout, self.head_only
            )
            await self._complete(vu, response, data)
            return
        start = perf_counter_ns()
        waiter = conn.send(data, start + self.timeout_ns, self.head_only)
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
            vu.client, response, data, url, limit, self.timeout - spent, record
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
            _only_keys(f"{field}[{i}]", item, ("min", "max"))
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


# -- think, ws, group --------------------------------------------------------------------


def _compile_think(field: str, value: Any) -> Runner:
    where = f"{field}.think"
    if isinstance(value, dict):
        _only_keys(where, value, ("min", "max"))
        if "min" not in value or "max" not in value:
            raise ScenarioError(where, 'expected {"min": duration, "max": duration}')
        low = parse_duration(f"{where}.min", value["min"])
        high = parse_duration(f"{where}.max", value["max"])
        if low > high:
            raise ScenarioError(f"{where}.max", "must be >= min")

        async def think_between(vu: VU) -> None:
            await asyncio.sleep(random.uniform(low, high))

        return think_between
    seconds = parse_duration(where, value)

    async def think(vu: VU) -> None:
        await asyncio.sleep(seconds)

    return think


def _compile_message(field: str, value: Any, scenario: str) -> Template:
    if isinstance(value, str):
        return compile_text(field, value, scenario)
    return compile_json(field, value, scenario)


def _compile_ws(field: str, value: Any, ctx: _Context) -> Runner:
    where = f"{field}.ws"
    spec = _mapping(where, value)
    _only_keys(
        where,
        spec,
        (
            "url",
            "headers",
            "join",
            "send",
            "expect",
            "latency_field",
            "hold",
            "reconnects",
            "name",
            "timeout",
        ),
    )
    url = resolve_static(
        f"{where}.url", _text(f"{where}.url", spec.get("url")).strip(), ctx.scenario
    )
    if not re.match(r"wss?://[^/?#]", url):
        raise ScenarioError(
            f"{where}.url", f"expected a ws:// or wss:// URL, got {url!r}"
        )
    plan = WsPlan(
        name=_static_text(f"{where}.name", spec["name"], ctx.scenario)
        if "name" in spec
        else url,
        url=compile_text(f"{where}.url", url, ctx.scenario),
        headers=_headers(f"{where}.headers", spec.get("headers", {}), ctx.scenario),
        join=_compile_message(f"{where}.join", spec["join"], ctx.scenario)
        if "join" in spec
        else None,
        hold=parse_duration(f"{where}.hold", spec.get("hold", 0)),
        reconnects=_count(f"{where}.reconnects", spec.get("reconnects", 0), 0),
        connect_timeout=parse_duration(
            f"{where}.timeout", spec.get("timeout", "10s"), allow_zero=False
        ),
    )
    if "send" in spec:
        send = _mapping(f"{where}.send", spec["send"])
        _only_keys(f"{where}.send", send, ("every", "count", "message"))
        if "message" not in send:
            raise ScenarioError(f"{where}.send.message", "is required")
        plan.every = parse_duration(f"{where}.send.every", send.get("every", "1s"))
        plan.count = _count(f"{where}.send.count", send.get("count", 1), 1)
        plan.message = _compile_message(
            f"{where}.send.message", send["message"], ctx.scenario
        )
    if "expect" in spec:
        expect = _mapping(f"{where}.expect", spec["expect"])
        _only_keys(f"{where}.expect", expect, ("count", "timeout"))
        plan.expect_count = _count(f"{where}.expect.count", expect.get("count"), 1)
        plan.expect_timeout = parse_duration(
            f"{where}.expect.timeout", expect.get("timeout", "10s"), allow_zero=False
        )
    if "latency_field" in spec:
        plan.latency_field = _text(f"{where}.latency_field", spec["latency_field"])
    group = ctx.group or None

    async def ws_step(vu: VU) -> None:
        await run_ws_plan(vu, plan, group)

    return ws_step


def _compile_group(field: str, step: dict[str, Any], ctx: _Context) -> Runner:
    name = _static_text(f"{field}.group", step["group"], ctx.scenario)
    if "::" in name:
        raise ScenarioError(f"{field}.group", "a group name cannot contain '::'")
    if "steps" not in step:
        raise ScenarioError(f"{field}.steps", "a group needs its steps")
    path = f"{ctx.group}::{name}"
    runners = _compile_list(
        f"{field}.steps", step["steps"], _Context(ctx.scenario, path, ctx.user_agent)
    )
    key = ("group_duration", path)

    async def group(vu: VU) -> None:
        """Run the group's steps; record k6's group_duration (also on an error)."""
        start = perf_counter_ns()
        try:
            for run in runners:
                await run(vu)
        except asyncio.CancelledError:
            raise  # an interrupted group records nothing, as in k6
        except Exception:
            _record_group(vu, key, start)
            raise
        _record_group(vu, key, start)

    return group


def _record_group(vu: VU, key: tuple[str, str], start: int) -> None:
    tags = vu.tag_cache.get(key)
    if tags is None:
        tags = {**vu.tags, "group": key[1]}
        vu.cache_tags(key, tags)
    vu.registry.add("group_duration", (perf_counter_ns() - start) / 1e6, tags)


def _compile_step(field: str, step: Any, ctx: _Context) -> Runner:
    step = _mapping(field, step)
    kinds = [kind for kind in _STEP_KINDS if kind in step]
    if not kinds:
        unknown = [k for k in step if k not in ("checks", "captures", "steps")]
        raise ScenarioError(
            f"{field}.{unknown[0]}" if unknown else field,
            f"unknown step kind (a step needs one of {', '.join(_STEP_KINDS)})",
        )
    if len(kinds) > 1:
        raise ScenarioError(
            field, f"a step needs exactly one of {', '.join(_STEP_KINDS)}, got {kinds}"
        )
    kind = kinds[0]
    if kind == "request":
        _only_keys(field, step, ("request", "checks", "captures"))
        return _RequestStep(field, step, ctx)
    if kind == "group":
        _only_keys(field, step, ("group", "steps"))
        return _compile_group(field, step, ctx)
    _only_keys(field, step, (kind,))
    if kind == "batch":
        return _compile_batch(field, step["batch"], ctx)
    if kind == "think":
        return _compile_think(field, step["think"])
    return _compile_ws(field, step["ws"], ctx)


def _compile_batch(field: str, value: Any, ctx: _Context) -> Runner:
    """k6's http.batch: request steps sent in parallel (at most BATCH_LIMIT at once,
    BATCH_PER_HOST per host), each with its own checks and captures."""
    items = _list(f"{field}.batch", value)
    if not items:
        raise ScenarioError(f"{field}.batch", "expected at least one request step")
    requests = []
    for index, item in enumerate(items):
        where = f"{field}.batch[{index}]"
        item = _mapping(where, item)
        if "request" not in item:
            raise ScenarioError(where, "a batch holds request steps ({'request': ...})")
        _only_keys(where, item, ("request", "checks", "captures"))
        requests.append(_RequestStep(where, item, ctx))

    async def batch(vu: VU) -> None:
        total = asyncio.Semaphore(BATCH_LIMIT)
        per_host: dict[Any, asyncio.Semaphore] = {}

        async def one(step: _RequestStep) -> None:
            host = per_host.setdefault(step.origin, asyncio.Semaphore(BATCH_PER_HOST))
            async with total, host:
                await step(vu)

        results = await asyncio.gather(
            *(one(step) for step in requests), return_exceptions=True
        )
        for result in results:  # every request has ended: the first error goes on
            if isinstance(result, BaseException):
                raise result

    return batch


def _compile_list(field: str, steps: Any, ctx: _Context) -> list[Runner]:
    items = _list(field, steps)
    if not items:
        raise ScenarioError(field, "expected at least one step")
    return [_compile_step(f"{field}[{i}]", step, ctx) for i, step in enumerate(items)]


def compile_steps(
    field: str,
    steps: list[Any],
    *,
    scenario: str,
    registry: Any = None,
    user_agent: str = USER_AGENT,
) -> IterationFn:
    """Validate and compile `steps`; returns `async def iteration(vu)`.

    A request error (refused, reset, timeout) is recorded, never raised. A
    template that cannot render (a var not captured yet) ends the iteration
    with a warning logged once per message. `registry` is accepted for the
    engine's contract; VUs record through their own `vu.registry`.
    """
    runners = _compile_list(field, steps, _Context(scenario, "", user_agent))
    if len(runners) == 1 and getattr(runners[0], "static", False):
        return runners[0].__call__  # nothing to render: no TemplateError possible

    async def iteration(vu: VU) -> None:
        try:
            for run in runners:
                await run(vu)
        except TemplateError as error:
            _warn_once(str(error))

    return iteration


def _warn_once(message: str) -> None:
    if message not in _warned and len(_warned) < 1000:
        _warned.add(message)
        logger.warning("load iteration stopped: %s", message)


def compile_exec(field: str, reference: Any) -> IterationFn:
    """Resolve "module:function" to an `async def function(vu)`."""
    if not isinstance(reference, str) or reference.count(":") != 1:
        raise ScenarioError(field, f"expected 'module:function', got {reference!r}")
    module_name, function_name = (part.strip() for part in reference.split(":"))
    if not module_name or not function_name:
        raise ScenarioError(field, f"expected 'module:function', got {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ScenarioError(
            field, f"cannot import module {module_name!r}: {error}"
        ) from None
    function = getattr(module, function_name, None)
    if function is None:
        raise ScenarioError(field, f"module {module_name!r} has no {function_name!r}")
    if not inspect.iscoroutinefunction(function):
        raise ScenarioError(
            field, f"{reference} must be an 'async def {function_name}(vu)' function"
        )
    return function
