"""Message templates of the WebSocket probes: `{{name}}` placeholders in JSON or text.

A template is a JSON value (object, list...) or a text. In a JSON template a
string that is exactly one placeholder, `"{{sent_ms}}"`, becomes the value
itself (a number stays a number); a placeholder inside a longer string is
replaced by its text. A text template is sent as text with its placeholders
replaced. The template is compiled once into constant parts and getters, so
rendering a message is one `str.join`.
"""

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chaoslib.exceptions import ActivityFailed

__all__ = ["Template", "compile_template", "json_field"]

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_WHOLE = re.compile(r'"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}"')


class Template:
    """A compiled template: `render(values)` returns the text to send."""

    def __init__(self, parts: list[Any], names: set[str], is_json: bool) -> None:
        self.parts = parts  # str constants and (name, typed) pairs
        self.names = names
        self.json = is_json

    def render(self, values: Mapping[str, Any]) -> str:
        """The message text with every placeholder filled from `values`."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, typed = part
            value = values[name]
            if typed:
                out.append(json.dumps(value))
            elif isinstance(value, str):
                out.append(json.dumps(value)[1:-1] if self.json else value)
            else:
                out.append(str(value))
        return "".join(out)


def _split(text: str, pattern: re.Pattern, typed: bool, parts: list, names: set):
    position = 0
    for match in pattern.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        parts.append((match.group(1), typed))
        names.add(match.group(1))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])


def compile_template(
    argument: str, value: Any, known: Iterable[str], required: Iterable[str] = ()
) -> Template:
    """Compile `value` (a JSON value or a text); ActivityFailed names `argument`.

    Placeholders must be among `known`; each name of `required` must appear.
    """
    known = tuple(known)
    parts: list[Any] = []
    names: set[str] = set()
    if isinstance(value, str):
        _split(value, _PLACEHOLDER, False, parts, names)
        template = Template(parts, names, is_json=False)
    else:
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ActivityFailed(
                f"argument '{argument}' must be a JSON value or a text: {error}"
            ) from None
        whole: list[Any] = []
        _split(text, _WHOLE, True, whole, names)
        for part in whole:
            if isinstance(part, str):
                _split(part, _PLACEHOLDER, False, parts, names)
            else:
                parts.append(part)
        template = Template(parts, names, is_json=True)
    unknown = sorted(names - set(known))
    if unknown:
        raise ActivityFailed(
            f"argument '{argument}': unknown placeholder {{{{{unknown[0]}}}}}; "
            f"known: {', '.join('{{' + name + '}}' for name in known)}"
        )
    for name in required:
        if name not in names:
            raise ActivityFailed(
                f"argument '{argument}' must contain the placeholder {{{{{name}}}}}"
                " (it marks each message so that its receivers can be matched)"
            )
    return template


def json_field(path: str) -> Callable[[Any], Any]:
    """A reader of the dotted `path` ("sent_at", "meta.sent_at") in a JSON text."""
    keys = path.split(".")

    def read(message: Any) -> Any:
        try:
            value = json.loads(message)
            for key in keys:
                value = value[key]
        except (ValueError, TypeError, KeyError, IndexError):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return value

    return read
