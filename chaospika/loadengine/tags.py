"""Metric selectors and sample tags, read as k6 reads them (k6's metrics/tags).

`parse_selector("http_reqs{status:200}")` splits a threshold's or probe's
selector into the name and its tag pairs; `canonical_selector` gives k6's name
of the sub-metric; `_route_entry` builds what feeds a sub-metric the samples
whose tags match.
"""

from collections.abc import Callable, Mapping
from typing import Any

from chaospika.loadengine.errors import ScenarioError

__all__ = ["canonical_selector", "parse_selector"]


def parse_selector(
    field: str, selector: str
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Split `name{k:v,...}` into the name and its tag pairs (k6's parsing rules)."""
    if not isinstance(selector, str) or not selector.strip():
        raise ScenarioError(field, f"expected a metric name, got {selector!r}")
    opening, closing = selector.find("{"), selector.rfind("}")
    if opening == -1 and closing == -1:
        return selector, ()
    if opening == -1 or closing < opening or closing != len(selector) - 1:
        raise ScenarioError(field, f"malformed metric selector {selector!r}")
    pairs = []
    for part in selector[opening + 1 : closing].split(","):
        key, sep, value = part.partition(":")
        if not sep or not value:
            raise ScenarioError(
                field,
                f"malformed tag {part.strip()!r} in {selector!r} (expected key:value)",
            )
        pairs.append((key.strip().strip("\"'"), value.strip().strip("\"'")))
    return selector[:opening], tuple(pairs)


def canonical_selector(selector: str) -> str:
    """k6's name of a sub-metric: spaces inside the braces' ends trimmed, no more.

    `http_reqs{ name : "login" }` is `http_reqs{name : "login"}`, as k6 1.1.0 writes it.
    """
    opening = selector.find("{")
    if opening < 0 or not selector.endswith("}"):
        return selector
    return selector[: opening + 1] + selector[opening + 1 : -1].strip() + "}"


def _tag_text(value: Any) -> str:
    """A tag value as k6 sees it: a string (booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _matches(found: Any, expected: str) -> bool:
    """True if a sample's tag value equals a selector's (compared as k6 text)."""
    return found == expected or (
        found is not None and type(found) is not str and _tag_text(found) == expected
    )


def _route_entry(tags: tuple, append: Callable) -> tuple:
    """(key, expected, append) for one tag; (None, None, feed) for several."""
    if len(tags) == 1:
        return (*tags[0], append)

    def feed(value: float, sample_tags: Mapping) -> None:
        for key, expected in tags:
            if not _matches(sample_tags.get(key), expected):
                return
        append(value)

    return None, None, feed
