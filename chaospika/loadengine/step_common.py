"""What every kind of step shares while it is compiled: where it sits (`_Context`),
the `Runner` it becomes, and the checks of names, headers and static strings."""

import re
from collections.abc import Awaitable, Callable
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.http1 import USER_AGENT
from chaospika.loadengine.template import Template, compile_text
from chaospika.loadengine.validate import require_mapping, require_text
from chaospika.loadengine.vu import VU

__all__ = ["Runner"]

Runner = Callable[[VU], Awaitable[None]]
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


class _Context:
    """Where a step sits: its scenario and group path ("" at the root)."""

    def __init__(
        self,
        scenario: str,
        group: str = "",
        user_agent: str = USER_AGENT,
        discard_bodies: bool = False,
    ) -> None:
        self.scenario = scenario
        self.group = group
        self.user_agent = user_agent  # k6's userAgent option ("": no header)
        self.discard_bodies = discard_bodies  # k6's discardResponseBodies option

    def within(self, group: str) -> "_Context":
        """The same context for the steps of group path `group`."""
        return _Context(self.scenario, group, self.user_agent, self.discard_bodies)


def _static_text(field: str, value: Any, scenario: str) -> str:
    """A string that may use {{env.X}}/{{scenario}} but no per-iteration template."""
    template = compile_text(field, require_text(field, value), scenario)
    if not template.static:
        raise ScenarioError(field, "must not use per-iteration templates here")
    return template.value


def _string_map(field: str, value: Any) -> dict[str, str]:
    """An object of names to strings (numbers accepted and converted)."""
    result = {}
    for key, item in require_mapping(field, value).items():
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


def _list(field: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(field, f"expected a list, got {value!r}")
    return value
