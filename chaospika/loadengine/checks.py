"""Checks and captures on a response (k6's check(), and values kept for later steps).

A check is `{"status": ...}`, `{"body_contains": ...}` or `{"jsonpath": ...,
"exists"|"equals": ...}`, recorded in k6's `checks` rate under its name; a capture
keeps a JSON value or a header in the VU's vars (and the run's captured values).
`compile_jsonpath` reads the JSONPath subset both use: `$.a.b[0]['c d']`.
"""

import json
import re
from collections.abc import Callable
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.http1 import Response
from chaospika.loadengine.step_common import _Context
from chaospika.loadengine.template import compile_text, compile_value
from chaospika.loadengine.validate import (
    reject_unknown,
    require_bool,
    require_mapping,
    require_text,
)
from chaospika.loadengine.vu import VU

__all__ = ["Check", "compile_jsonpath"]


_JSONPATH_PART = re.compile(
    r"\.(?P<name>[^.\[\]]+)|\[(?P<index>-?\d+)\]|\[(?P<quote>['\"])(?P<key>.*?)(?P=quote)\]"
)
_MISSING = object()


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


Check = Callable[[VU, Response], None]


def _compile_check(field: str, spec: Any, ctx: _Context) -> Check:
    """One check -> run(vu, response); it records to `checks` only (as in k6)."""
    spec = require_mapping(field, spec)
    kinds = [k for k in ("status", "jsonpath", "body_contains") if k in spec]
    if len(kinds) != 1:
        raise ScenarioError(
            field, "a check needs exactly one of status, jsonpath, body_contains"
        )
    kind = kinds[0]
    group = ctx.group or None
    if kind == "status":
        reject_unknown(field, spec, ("status", "name"))
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
        reject_unknown(field, spec, ("body_contains", "name"))
        needle = compile_text(
            f"{field}.body_contains",
            require_text(f"{field}.body_contains", spec["body_contains"]),
            ctx.scenario,
        )
        name = _check_name(field, spec, f"body contains {needle.source!r}")

        def body_check(vu: VU, response: Response) -> None:
            text = needle.value if needle.static else needle.render(vu)
            vu.check(name, text.encode() in response.body, group)

        return body_check
    reject_unknown(field, spec, ("jsonpath", "exists", "equals", "name"))
    keys = compile_jsonpath(f"{field}.jsonpath", spec["jsonpath"])
    path = spec["jsonpath"]
    if ("exists" in spec) == ("equals" in spec):
        raise ScenarioError(
            field, "a jsonpath check needs exactly one of exists, equals"
        )
    if "exists" in spec:
        wanted = require_bool(f"{field}.exists", spec["exists"])
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
    return require_text(f"{field}.name", spec["name"]) if "name" in spec else default


def _compile_capture(field: str, spec: Any) -> Callable[[VU, Response], None]:
    spec = require_mapping(field, spec)
    reject_unknown(field, spec, ("name", "jsonpath", "header"))
    name = require_text(f"{field}.name", spec.get("name"))
    if ("jsonpath" in spec) == ("header" in spec):
        raise ScenarioError(field, "a capture needs exactly one of jsonpath, header")
    if "header" in spec:
        header = require_text(f"{field}.header", spec["header"]).lower()

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
