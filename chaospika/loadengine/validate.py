"""The engine's one set of spec checks; every failure is a ScenarioError naming
the dotted path of the bad field (e.g. `scenarios.orders.rate`)."""

import math
from collections.abc import Iterable
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.units import OPTION_NUMBERS, parse_duration

__all__ = [
    "join_path",
    "option_duration",
    "option_int",
    "reject_unknown",
    "require_bool",
    "require_int",
    "require_mapping",
    "require_text",
]


def reject_unknown(field: str, raw: dict, allowed: Iterable[str]) -> None:
    """Raise for the first key of `raw` that is not in `allowed`."""
    allowed = set(allowed)
    for key in raw:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ScenarioError(
                join_path(field, key), f"unknown option (known: {known})"
            )


def join_path(field: str, key: str) -> str:
    """The dotted path of `key` inside `field` ("" is the top level)."""
    return f"{field}.{key}" if field else key


def option_int(
    field: str,
    raw: dict,
    key: str,
    default: int | None = None,
    minimum: int = 0,
) -> int:
    """`raw[key]` as an int >= `minimum`; `default` when absent (None: required)."""
    if key not in raw:
        if default is None:
            raise ScenarioError(join_path(field, key), "is required")
        return default
    return require_int(join_path(field, key), raw[key], minimum)


def require_int(field: str, value: Any, minimum: int = 0) -> int:
    """`value` as an int >= `minimum` (an integral float such as 3.0 is accepted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(field, f"expected an integer, got {value!r}")
    if isinstance(value, float) and (
        not math.isfinite(value) or not value.is_integer()
    ):
        raise ScenarioError(field, f"expected an integer, got {value!r}")
    if value < minimum:
        raise ScenarioError(field, f"must be >= {minimum}, got {value!r}")
    return int(value)


def option_duration(
    field: str,
    raw: dict,
    key: str,
    default: float | None = None,
    minimum: float = 0.0,
    positive: bool = False,
) -> float:
    """Return `raw[key]` in seconds (k6 duration; a number is milliseconds, as in k6),
    >= `minimum` (> 0 if `positive`)."""
    if key not in raw:
        if default is None:
            raise ScenarioError(join_path(field, key), "is required")
        return default
    seconds = parse_duration(
        join_path(field, key),
        raw[key],
        allow_zero=not positive,
        per_second=OPTION_NUMBERS,
    )
    if seconds < minimum:
        raise ScenarioError(
            join_path(field, key), f"must be at least {minimum:g}s, got {raw[key]!r}"
        )
    return seconds


def require_mapping(field: str, value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object."""
    if not isinstance(value, dict):
        raise ScenarioError(field, f"expected an object, got {value!r}")
    return value


def require_text(field: str, value: Any) -> str:
    """`value` if it is a string with something other than white space."""
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(field, f"expected a non-empty string, got {value!r}")
    return value


def require_bool(field: str, value: Any) -> bool:
    """`value` if it is true or false."""
    if not isinstance(value, bool):
        raise ScenarioError(field, f"expected true or false, got {value!r}")
    return value
