"""Templates of a load spec ("{{vu}}", "{{var.id}}", ...) as k6 JavaScript expressions.

The spec has been checked by `parse_spec` first, so every placeholder here is
valid. Mapping: {{vu}} -> __VU, {{iter}} -> __ITER, {{uuid}} ->
crypto.randomUUID(), {{counter}} -> pikaCounter(), {{random:a|b}} ->
pikaChoice([...]), {{randint:1-100}} -> pikaRandint(1, 100), {{now_ms}} ->
Date.now(), {{var.NAME}} -> pikaVar(...), {{env.NAME}} -> __ENV["NAME"],
{{scenario}} -> the scenario's name. As in the pika engine, a string that is
exactly one placeholder keeps the placeholder's type inside JSON values.
"""

import json
import re
from typing import Any

__all__ = ["env_names", "js_string", "js_text", "js_value"]

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_RANGE = re.compile(r"\s*(-?\d+)\s*-\s*(-?\d+)\s*\Z")
_SIMPLE = {
    "vu": "__VU",
    "iter": "__ITER",
    "uuid": "crypto.randomUUID()",
    "counter": "pikaCounter()",
    "now_ms": "Date.now()",
}


def js_string(text: str) -> str:
    """A JavaScript string literal of `text`."""
    return json.dumps(text)


def _expression(expr: str, field: str, scenario: str) -> str:
    """The JS expression of one placeholder's inner text."""
    expr = expr.strip()
    if expr in _SIMPLE:
        return _SIMPLE[expr]
    if expr == "scenario":
        return js_string(scenario)
    kind, _, arg = expr.partition(":")
    if kind == "random":
        return f"pikaChoice({json.dumps(arg.split('|'))})"
    if kind == "randint":
        low, high = _RANGE.match(arg).groups()
        return f"pikaRandint({int(low)}, {int(high)})"
    scope, _, name = expr.partition(".")
    if scope == "env":
        return f"__ENV[{js_string(name)}]"
    return f"pikaVar({js_string(scenario)}, {js_string(name)}, {js_string(field)})"


def _parts(text: str, field: str, scenario: str) -> list[tuple[bool, str]]:
    """(True, literal) and (False, JS expression) parts of a template string."""
    parts: list[tuple[bool, str]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append((True, text[position : match.start()]))
        parts.append((False, _expression(match.group(1), field, scenario)))
        position = match.end()
    if position < len(text):
        parts.append((True, text[position:]))
    return parts


def js_text(text: str, field: str, scenario: str) -> str:
    """A JS expression rendering the template `text` as a string."""
    parts = _parts(text, field, scenario)
    if not parts:
        return '""'
    pieces = [
        js_string(part) if literal else f"pikaText({part})" for literal, part in parts
    ]
    return " + ".join(pieces)


def js_value(value: Any, field: str, scenario: str) -> str:
    """A JS expression building the JSON `value` with its templates filled in."""
    if isinstance(value, str):
        parts = _parts(value, field, scenario)
        if len(parts) == 1 and not parts[0][0]:
            return parts[0][1]  # a lone placeholder keeps its type
        return js_text(value, field, scenario)
    if isinstance(value, list):
        items = (js_value(v, f"{field}[{i}]", scenario) for i, v in enumerate(value))
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        pairs = (
            f"{js_string(key)}: {js_value(item, f'{field}.{key}', scenario)}"
            for key, item in value.items()
        )
        return "{" + ", ".join(pairs) + "}"
    return json.dumps(value)


def env_names(value: Any) -> set[str]:
    """Names of the environment variables that `{{env.NAME}}` templates read."""
    if isinstance(value, str):
        found = set()
        for match in _PLACEHOLDER.finditer(value):
            scope, _, name = match.group(1).strip().partition(".")
            if scope == "env":
                found.add(name)
        return found
    if isinstance(value, dict):
        return set().union(*(env_names(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(env_names(item) for item in value))
    return set()
