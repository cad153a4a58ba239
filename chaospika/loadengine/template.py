"""Templates in load specs ("{{vu}}", "{{var.order_id}}", ...): compiled once, rendered per use.

Placeholders: {{vu}}, {{iter}}, {{scenario}}, {{uuid}}, {{counter}} (process-wide,
increasing), {{random:a|b|c}}, {{randint:1-100}}, {{now_ms}}, {{var.NAME}} (a value
the VU captured) and {{env.NAME}} (read once, at compile time, from the scenario's
`env` first, as k6's per-scenario env, then the process environment, where
`-e KEY=VALUE` puts it). A string that is
exactly one placeholder keeps the placeholder's type in JSON values (a number stays
a number); placeholders inside longer strings are formatted as text.
"""

import itertools
import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from json.encoder import encode_basestring
from typing import Any

from chaospika.loadengine.errors import ScenarioError

__all__ = [
    "PLACEHOLDER_HELP",
    "Template",
    "TemplateError",
    "compile_json",
    "compile_text",
    "compile_value",
    "concat_text",
    "has_placeholders",
    "resolve_static",
    "scenario_env",
]

PLACEHOLDER_HELP = (
    "vu, iter, scenario, uuid, counter, now_ms, random:a|b|c, randint:MIN-MAX, "
    "var.NAME, env.NAME"
)
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_SCENARIO_ENV: ContextVar[Mapping[str, str] | None] = ContextVar(
    "scenario_env", default=None
)


@contextmanager
def scenario_env(env: Mapping[str, str]) -> Iterator[None]:
    """While compiling a scenario: its `env` (k6's) seen first by {{env.NAME}}."""
    token = _SCENARIO_ENV.set(env)
    try:
        yield
    finally:
        _SCENARIO_ENV.reset(token)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
_RANGE = re.compile(r"\s*(-?\d+)\s*-\s*(-?\d+)\s*\Z")
_counter = itertools.count(1)

Getter = Callable[[Any], Any]


class TemplateError(RuntimeError):
    """A template could not be rendered for this VU (e.g. a var not captured yet)."""


class Template:
    """A compiled template; `static` ones always render `value`."""

    __slots__ = ("render", "source", "static", "value")

    def __init__(self, source: Any, static: bool, value: Any, render: Getter) -> None:
        self.source = source
        self.static = static
        self.value = value
        self.render = render

    @classmethod
    def constant(cls, source: Any, value: Any) -> "Template":
        """A template without placeholders."""
        return cls(source, True, value, lambda vu: value)

    def __repr__(self) -> str:
        return f"<Template {self.source!r} static={self.static}>"


def has_placeholders(text: str) -> bool:
    """True when `text` contains "{{".."}}" placeholders."""
    return "{{" in text


def resolve_static(field: str, text: str, scenario: str = "") -> str:
    """Fill in the placeholders known at compile time ({{env.X}}, {{scenario}})."""

    def fill(match: re.Match) -> str:
        is_constant, value = _placeholder(field, match.group(1), scenario)
        return str(value) if is_constant else match.group(0)

    return _PLACEHOLDER.sub(fill, text)


def _counter_next(vu: Any) -> int:
    return next(_counter)


def _now_ms(vu: Any) -> int:
    return int(time.time() * 1000)


def _uuid4(vu: Any) -> str:
    return str(uuid.uuid4())


def _vu_id(vu: Any) -> int:
    return vu.id


def _vu_iteration(vu: Any) -> int:
    return vu.iteration


def _var_getter(field: str, name: str) -> Getter:
    def get(vu: Any) -> Any:
        try:
            return vu.vars[name]
        except KeyError:
            raise TemplateError(
                f"{field}: {{{{var.{name}}}}} has no value yet (nothing captured it "
                f"in this VU)"
            ) from None

    return get


def _placeholder(field: str, expr: str, scenario: str) -> tuple[bool, Any]:
    """Compile one placeholder: (True, constant) or (False, getter)."""
    expr = expr.strip()
    simple = {
        "vu": _vu_id,
        "iter": _vu_iteration,
        "uuid": _uuid4,
        "counter": _counter_next,
        "now_ms": _now_ms,
    }
    if expr in simple:
        return False, simple[expr]
    if expr == "scenario":
        return True, scenario
    kind, _, arg = expr.partition(":")
    if kind == "random" and arg:
        choices = tuple(arg.split("|"))
        return False, lambda vu: random.choice(choices)
    if kind == "randint" and arg:
        match = _RANGE.match(arg)
        if match is None or int(match.group(1)) > int(match.group(2)):
            raise ScenarioError(
                field, f"{{{{{expr}}}}}: expected randint:MIN-MAX with MIN <= MAX"
            )
        low, high = int(match.group(1)), int(match.group(2))
        return False, lambda vu: random.randint(low, high)
    scope, _, name = expr.partition(".")
    if scope in ("var", "env") and _NAME.match(name):
        if scope == "var":
            return False, _var_getter(field, name)
        own = _SCENARIO_ENV.get() or {}
        if name in own:
            return True, own[name]
        if name not in os.environ:
            raise ScenarioError(
                field, f"{{{{env.{name}}}}}: environment variable {name} is not set"
            )
        return True, os.environ[name]
    raise ScenarioError(
        field, f"unknown template {{{{{expr}}}}} (expected one of {PLACEHOLDER_HELP})"
    )


def _parse(field: str, text: str, scenario: str) -> list[tuple[bool, Any]]:
    """Split text into parts: (True, literal text) or (False, getter)."""
    parts: list[tuple[bool, Any]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append((True, text[position : match.start()]))
        parts.append(_placeholder(field, match.group(1), scenario))
        position = match.end()
    if position < len(text):
        parts.append((True, text[position:]))
    for is_literal, part in parts:
        if is_literal and isinstance(part, str) and "{{" in part:
            raise ScenarioError(field, f"unclosed '{{{{' in {text!r}")
    return parts


def _text_renderer(parts: list[tuple[bool, Any]]) -> Getter:
    """One str.format call per render; literals are pre-joined."""
    fmt: list[str] = []
    getters: list[Getter] = []
    for is_literal, part in parts:
        if is_literal:
            fmt.append(str(part).replace("{", "{{").replace("}", "}}"))
        else:
            fmt.append("{}")
            getters.append(part)
    pattern = "".join(fmt)
    if len(getters) == 1:
        (only,) = getters
        if pattern == "{}":
            return lambda vu: str(only(vu))
        return lambda vu: pattern.format(only(vu))
    if len(getters) == 2:
        first, second = getters
        return lambda vu: pattern.format(first(vu), second(vu))
    items = tuple(getters)
    return lambda vu: pattern.format(*[get(vu) for get in items])


def compile_text(field: str, text: Any, scenario: str = "") -> Template:
    """Compile a string template; `render(vu)` returns text."""
    if not isinstance(text, str):
        raise ScenarioError(field, f"expected a string, got {text!r}")
    parts = _parse(field, text, scenario)
    if all(is_literal for is_literal, _ in parts):
        return Template.constant(text, "".join(str(p) for _, p in parts))
    return Template(text, False, None, _text_renderer(parts))


def _compile_string_value(field: str, text: str, scenario: str) -> Template:
    """A string inside a JSON value: a lone placeholder keeps its type."""
    parts = _parse(field, text, scenario)
    if all(is_literal for is_literal, _ in parts):
        return Template.constant(text, "".join(str(p) for _, p in parts))
    if len(parts) == 1:
        return Template(text, False, None, parts[0][1])
    return Template(text, False, None, _text_renderer(parts))


def compile_value(field: str, value: Any, scenario: str = "") -> Template:
    """Compile any JSON value; `render(vu)` returns the value with placeholders filled."""
    if isinstance(value, str):
        return _compile_string_value(field, value, scenario)
    if isinstance(value, list):
        items = [
            compile_value(f"{field}[{i}]", v, scenario) for i, v in enumerate(value)
        ]
        if all(item.static for item in items):
            return Template.constant(value, [item.value for item in items])
        return Template(value, False, None, lambda vu: [i.render(vu) for i in items])
    if isinstance(value, dict):
        pairs = []
        for key, item in value.items():
            if not isinstance(key, str) or has_placeholders(key):
                raise ScenarioError(
                    f"{field}.{key}", "object keys must be plain strings (no templates)"
                )
            pairs.append((key, compile_value(f"{field}.{key}", item, scenario)))
        if all(item.static for _, item in pairs):
            return Template.constant(value, {k: item.value for k, item in pairs})
        return Template(
            value, False, None, lambda vu: {k: t.render(vu) for k, t in pairs}
        )
    if value is None or isinstance(value, (bool, int, float)):
        return Template.constant(value, value)
    raise ScenarioError(field, f"expected a JSON value, got {type(value).__name__}")


def _dump(value: Any) -> str:
    """JSON-encode one rendered slot (fast paths for int and str)."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str:
        return encode_basestring(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def compile_json(field: str, value: Any, scenario: str = "") -> Template:
    """Compile a JSON body; `render(vu)` returns its compact JSON text.

    Constant parts are encoded once; only the placeholders' values are encoded
    per render.
    """
    slots: list[Template] = []
    marker = f"@@pika{uuid.uuid4().hex}_"

    def replace(path: str, item: Any) -> Any:
        if isinstance(item, str):
            compiled = _compile_string_value(path, item, scenario)
            if compiled.static:
                return compiled.value
            slots.append(compiled)
            return f"{marker}{len(slots) - 1}@@"
        if isinstance(item, list):
            return [replace(f"{path}[{i}]", v) for i, v in enumerate(item)]
        if isinstance(item, dict):
            result = {}
            for key, sub in item.items():
                if not isinstance(key, str) or has_placeholders(key):
                    raise ScenarioError(
                        f"{path}.{key}",
                        "object keys must be plain strings (no templates)",
                    )
                result[key] = replace(f"{path}.{key}", sub)
            return result
        if item is None or isinstance(item, (bool, int, float)):
            return item
        raise ScenarioError(path, f"expected a JSON value, got {type(item).__name__}")

    skeleton = replace(field, value)
    try:
        text = json.dumps(skeleton, ensure_ascii=False, separators=(",", ":"))
    except ValueError as error:
        raise ScenarioError(field, f"cannot encode as JSON: {error}") from None
    if not slots:
        return Template.constant(value, text)
    pieces = re.split(f'"{re.escape(marker)}(\\d+)@@"', text)
    literals = tuple(pieces[0::2])
    order = tuple(slots[int(index)].render for index in pieces[1::2])
    return Template(value, False, None, _json_renderer(literals, order))


# the JSON text of placeholders that always give an int: no `_dump` type test
_INT_TEXT: dict[Getter, Getter] = {
    _now_ms: lambda vu: str(int(time.time() * 1000)),
    _vu_id: lambda vu: str(vu.id),
    _vu_iteration: lambda vu: str(vu.iteration),
    _counter_next: lambda vu: str(next(_counter)),
}


def _json_text(get: Getter) -> Getter:
    """A getter of `get`'s value as JSON text."""
    text = _INT_TEXT.get(get)
    return text if text is not None else lambda vu: _dump(get(vu))


def _json_renderer(literals: tuple[str, ...], getters: tuple[Getter, ...]) -> Getter:
    texts = tuple(_json_text(get) for get in getters)
    if len(texts) == 1:  # one concatenation per slot: no list, no join
        l0, l1 = literals
        (t0,) = texts
        return lambda vu: l0 + t0(vu) + l1
    if len(texts) == 2:
        l0, l1, l2 = literals
        t0, t1 = texts
        return lambda vu: l0 + t0(vu) + l1 + t1(vu) + l2
    if len(texts) == 3:
        l0, l1, l2, l3 = literals
        t0, t1, t2 = texts
        return lambda vu: l0 + t0(vu) + l1 + t1(vu) + l2 + t2(vu) + l3

    def render(vu: Any) -> str:
        out = [literals[0]]
        for text, literal in zip(texts, literals[1:]):
            out.append(text(vu))
            out.append(literal)
        return "".join(out)

    return render


def concat_text(parts: list[Any]) -> Template:
    """Join literal strings and text Templates into one Template."""
    merged: list[Any] = []
    for part in parts:
        if isinstance(part, Template) and part.static:
            part = part.value
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    source = "".join(p if isinstance(p, str) else str(p.source) for p in merged)
    if all(isinstance(p, str) for p in merged):
        return Template.constant(source, "".join(merged))
    if len(merged) == 3 and isinstance(merged[0], str) and isinstance(merged[2], str):
        head, middle, tail = merged[0], merged[1].render, merged[2]
        return Template(source, False, None, lambda vu: head + middle(vu) + tail)
    items = tuple(merged)

    def render(vu: Any) -> str:
        return "".join([p if p.__class__ is str else p.render(vu) for p in items])

    return Template(source, False, None, render)
