"""Scenario steps (request, think, ws, group) as the body of a k6 scenario function.

The steps have been checked by `parse_spec`; this module only writes them as
JavaScript with the same behaviour as the pika engine's steps: checks named
alike, expected responses only from expectedStatuses (as in k6), captures after
checks, `think` as k6's sleep, groups as k6's group().
"""

import json
from typing import Any

from chaospika.loadengine.checks import compile_jsonpath
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.k6.js_template import js_string, js_text, js_value
from chaospika.loadengine.request_step import DEFAULT_TIMEOUT
from chaospika.loadengine.template import resolve_static
from chaospika.loadengine.units import parse_duration

__all__ = ["StepWriter", "k6_duration"]

_INDENT = "  "


def k6_duration(value: Any, field: str, per_second: float = 1000.0) -> str:
    """A spec duration (k6 string, or a number of 1/per_second s) as a k6 string."""
    if isinstance(value, str):
        parse_duration(field, value)
        return value.strip()
    milliseconds = parse_duration(field, value, per_second=per_second) * 1000
    if milliseconds == int(milliseconds):
        return f"{int(milliseconds)}ms"
    return f"{milliseconds!r}ms"


def _seconds(value: Any, field: str) -> str:
    return repr(parse_duration(field, value))


def _milliseconds(value: Any, field: str) -> str:
    return repr(parse_duration(field, value) * 1000)


def _status_values(raw: Any) -> list[int]:
    return raw if isinstance(raw, list) else [raw]


def check_name(spec: dict[str, Any]) -> str:
    """The check's name, as the pika engine names it (checks._compile_check)."""
    if "name" in spec:
        return spec["name"]
    if "status" in spec:
        values = _status_values(spec["status"])
        return f"status is {values[0]}" if len(values) == 1 else f"status in {values}"
    if "body_contains" in spec:
        return f"body contains {spec['body_contains']!r}"
    path = spec["jsonpath"]
    if "exists" in spec:
        return f"{path} {'exists' if spec['exists'] else 'is absent'}"
    return f"{path} == {json.dumps(spec['equals'], ensure_ascii=False)}"


class StepWriter:
    """Writes the JavaScript of one scenario's steps; collects the init code."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.lines: list[str] = []
        self.init: list[str] = []  # init-context declarations (response callbacks)
        self._depth = 1
        self._callbacks = 0

    def emit(self, line: str) -> None:
        self.lines.append(_INDENT * self._depth + line)

    def write(self, field: str, steps: list[Any]) -> None:
        """Write `steps` (the list at dotted path `field`)."""
        for index, step in enumerate(steps):
            self._step(f"{field}[{index}]", step)

    def _step(self, field: str, step: dict[str, Any]) -> None:
        if "request" in step:
            self._request(field, step)
        elif "think" in step:
            self._think(field, step["think"])
        elif "ws" in step:
            self._ws(f"{field}.ws", step["ws"])
        elif "batch" in step:
            raise ScenarioError(
                f"{field}.batch",
                "batch steps run on the pika engine only (engine: pika)",
            )
        else:
            name = resolve_static(f"{field}.group", step["group"], self.scenario)
            self.emit(f"group({js_string(name)}, () => {{")
            self._depth += 1
            self.write(f"{field}.steps", step["steps"])
            self._depth -= 1
            self.emit("});")

    # -- think ----------------------------------------------------------------------
    def _think(self, field: str, value: Any) -> None:
        where = f"{field}.think"
        if isinstance(value, dict):
            low = _seconds(value["min"], f"{where}.min")
            high = _seconds(value["max"], f"{where}.max")
            self.emit(f"sleep(pikaUniform({low}, {high}));")
        else:
            self.emit(f"sleep({_seconds(value, where)});")

    # -- request --------------------------------------------------------------------
    def _request(self, field: str, step: dict[str, Any]) -> None:
        where = f"{field}.request"
        spec = step["request"]
        method = spec.get("method", "GET").upper()
        url = resolve_static(f"{where}.url", spec["url"].strip(), self.scenario)
        headers = {
            name: js_text(str(value), f"{where}.headers.{name}", self.scenario)
            for name, value in spec.get("headers", {}).items()
        }
        body = "null"
        if "json" in spec:
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = js_string("application/json")
            body = f"JSON.stringify({js_value(spec['json'], f'{where}.json', self.scenario)})"
        elif "body" in spec:
            body = js_text(spec["body"], f"{where}.body", self.scenario)
        name = (
            resolve_static(f"{where}.name", spec["name"], self.scenario)
            if "name" in spec
            else url
        )
        tags = {str(k): str(v) for k, v in spec.get("tags", {}).items()}
        tags["name"] = name
        params = [
            "headers: {"
            + ", ".join(f"{js_string(k)}: {v}" for k, v in headers.items())
            + "}",
            f"tags: {json.dumps(tags)}",
            f"timeout: {js_string(self._timeout(where, spec))}",
        ]
        if "redirects" in spec:
            params.append(f"redirects: {int(spec['redirects'])}")
        if "responseType" in spec:  # checked by the pika parser: text, binary, none
            params.append(f"responseType: {js_string(spec['responseType'])}")
        callback = self._response_callback(field, step)
        if callback:
            params.append(f"responseCallback: {callback}")
        self.emit("{")
        self._depth += 1
        self.emit(
            f"const response = http.request({js_string(method)}, "
            f"{js_text(url, f'{where}.url', self.scenario)}, {body}, "
            f"{{{', '.join(params)}}});"
        )
        self._checks_and_captures(field, step)
        self._depth -= 1
        self.emit("}")

    @staticmethod
    def _timeout(where: str, spec: dict[str, Any]) -> str:
        timeout = spec.get("timeout", DEFAULT_TIMEOUT)  # a number: seconds (a step's)
        return k6_duration(timeout, f"{where}.timeout", per_second=1.0)

    def _response_callback(self, field: str, step: dict[str, Any]) -> str | None:
        """k6's expected statuses: the request's (checks never change them)."""
        given = step["request"].get("expectedStatuses")
        if given is None:
            return None
        expected = list(given)
        self._callbacks += 1
        name = f"PIKA_EXPECTED_{_identifier(self.scenario)}_{self._callbacks}"
        arguments = ", ".join(json.dumps(item) for item in expected)
        self.init.append(f"const {name} = http.expectedStatuses({arguments});")
        return name

    def _checks_and_captures(self, field: str, step: dict[str, Any]) -> None:
        checks = step.get("checks", [])
        captures = step.get("captures", [])
        if any("jsonpath" in item for item in [*checks, *captures]):
            self.emit("const document = pikaJson(response);")
        for index, check in enumerate(checks):
            where = f"{field}.checks[{index}]"
            name = js_string(check_name(check))
            self.emit(f"pikaCheck({name}, {self._check_test(where, check)});")
        for index, capture in enumerate(captures):
            self._capture(f"{field}.captures[{index}]", capture)

    def _check_test(self, where: str, check: dict[str, Any]) -> str:
        if "status" in check:
            return f"{json.dumps(_status_values(check['status']))}.includes(response.status)"
        if "body_contains" in check:
            needle = js_text(
                check["body_contains"], f"{where}.body_contains", self.scenario
            )
            return f"(typeof response.body === 'string' && response.body.includes({needle}))"
        found = self._lookup(f"{where}.jsonpath", check["jsonpath"])
        if "exists" in check:
            return f"(({found} !== PIKA_MISSING) === {json.dumps(check['exists'])})"
        wanted = js_value(check["equals"], f"{where}.equals", self.scenario)
        return f"pikaEquals({found}, {wanted})"

    @staticmethod
    def _lookup(field: str, path: str) -> str:
        return (
            f"pikaLookup(document, {json.dumps(list(compile_jsonpath(field, path)))})"
        )

    def _capture(self, field: str, capture: dict[str, Any]) -> None:
        if "header" in capture:
            value = f"pikaHeader(response, {js_string(capture['header'].lower())})"
        else:
            value = self._lookup(f"{field}.jsonpath", capture["jsonpath"])
        scenario, name = js_string(self.scenario), js_string(capture["name"])
        self.emit("{")
        self.emit(f"{_INDENT}const value = {value};")
        self.emit(
            f"{_INDENT}if (value !== PIKA_MISSING) pikaCapture({scenario}, {name}, value);"
        )
        self.emit("}")

    # -- ws -------------------------------------------------------------------------
    def _ws(self, where: str, spec: dict[str, Any]) -> None:
        if "timeout" in spec:
            raise ScenarioError(
                f"{where}.timeout",
                "k6's ws module has no connect timeout; remove it to run on k6",
            )
        url = resolve_static(f"{where}.url", spec["url"].strip(), self.scenario)
        name = (
            resolve_static(f"{where}.name", spec["name"], self.scenario)
            if "name" in spec
            else url
        )
        headers = ", ".join(
            f"{js_string(k)}: {js_text(str(v), f'{where}.headers.{k}', self.scenario)}"
            for k, v in spec.get("headers", {}).items()
        )
        send = spec.get("send", {})
        expect = spec.get("expect", {})
        plan = {
            "name": js_string(name),
            "url": f"() => {js_text(url, f'{where}.url', self.scenario)}",
            "headers": f"() => ({{{headers}}})",
            "join": self._message(f"{where}.join", spec["join"])
            if "join" in spec
            else "null",
            "every": _milliseconds(send.get("every", "1s"), f"{where}.send.every"),
            "count": str(send.get("count", 1) if send else 0),
            "message": self._message(f"{where}.send.message", send["message"])
            if send
            else "null",
            "expectCount": str(expect.get("count", 0)),
            "expectTimeout": _milliseconds(
                expect.get("timeout", "10s") if expect else 0,
                f"{where}.expect.timeout",
            ),
            "latencyField": js_string(spec["latency_field"])
            if "latency_field" in spec
            else "null",
            "hold": _milliseconds(spec.get("hold", 0), f"{where}.hold"),
            "reconnects": str(spec.get("reconnects", 0)),
        }
        self.emit("pikaWs({")
        for key, value in plan.items():
            self.emit(f"{_INDENT}{key}: {value},")
        self.emit("});")

    def _message(self, field: str, value: Any) -> str:
        if isinstance(value, str):
            return f"() => {js_text(value, field, self.scenario)}"
        return f"() => JSON.stringify({js_value(value, field, self.scenario)})"


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
