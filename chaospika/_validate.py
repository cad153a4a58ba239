"""Argument checks shared by every activity: each failure names the argument."""

import math
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import SplitResult, urlsplit

from chaoslib.exceptions import ActivityFailed

from chaospika._secrets import redact_text, redact_url

__all__ = [
    "require_choice",
    "require_duration",
    "require_int",
    "require_number",
    "require_path",
    "require_text",
    "require_url",
]


def require_url(name: str, value: Any, schemes: Iterable[str]) -> SplitResult:
    """Return `value` parsed as a URL with one of `schemes` and a host.

    Error messages show the URL with its password masked (`redact_url`).
    """
    schemes = tuple(schemes)
    if not isinstance(value, str) or not value.strip():
        raise ActivityFailed(
            f"argument '{name}' must be a URL string, got {redact_text(repr(value))}"
        )
    shown = repr(redact_url(value))
    try:
        parsed = urlsplit(value.strip())
        _ = parsed.port  # raises ValueError on a malformed port
    except ValueError as error:
        raise ActivityFailed(
            f"argument '{name}' is not a valid URL ({redact_text(error)}): {shown}"
        ) from None
    if parsed.scheme not in schemes:
        expected = ", ".join(f"{s}://" for s in schemes)
        raise ActivityFailed(
            f"argument '{name}' must start with {expected}, got {shown}"
        )
    if not parsed.hostname and not parsed.scheme.startswith(("sqlite", "unix")):
        raise ActivityFailed(f"argument '{name}' has no host: {shown}")
    return parsed


def require_number(
    name: str,
    value: Any,
    minimum: float = 0.0,
    allow_equal: bool = True,
    maximum: float | None = None,
) -> float:
    """Return `value` as a finite float no less than `minimum` (strings accepted)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ActivityFailed(f"argument '{name}' must be a number, got {value!r}")
    if isinstance(value, bool) or not math.isfinite(number):
        raise ActivityFailed(
            f"argument '{name}' must be a finite number, got {value!r}"
        )
    if number < minimum or (number == minimum and not allow_equal):
        relation = ">=" if allow_equal else ">"
        raise ActivityFailed(
            f"argument '{name}' must be {relation} {minimum:g}, got {value!r}"
        )
    if maximum is not None and number > maximum:
        raise ActivityFailed(f"argument '{name}' must be <= {maximum:g}, got {value!r}")
    return number


def require_duration(
    name: str,
    value: Any,
    minimum: float = 0.0,
    allow_equal: bool = True,
    maximum: float | None = None,
) -> float:
    """Return `value` in seconds: a number of seconds or a string like "30s", "250ms"."""
    from chaospika.loadengine import ScenarioError, parse_duration

    seconds = None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parse_duration(name, value)
            except ScenarioError:
                seconds = None
    if seconds is None:
        raise ActivityFailed(
            f"argument '{name}' must be a duration: seconds or a string such as "
            f"'30s', '250ms', '1m30s'; got {value!r}"
        )
    if seconds < minimum or (seconds == minimum and not allow_equal):
        relation = ">=" if allow_equal else ">"
        raise ActivityFailed(
            f"argument '{name}' must be {relation} {minimum:g} s, got {value!r}"
        )
    return require_number(name, seconds, minimum, allow_equal, maximum)


def require_int(
    name: str, value: Any, minimum: int = 0, maximum: int | None = None
) -> int:
    """Return `value` as an int no less than `minimum` (integral strings accepted)."""
    if isinstance(value, bool):
        raise ActivityFailed(f"argument '{name}' must be an integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ActivityFailed(f"argument '{name}' must be an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ActivityFailed(f"argument '{name}' must be an integer, got {value!r}")
    if number < minimum:
        raise ActivityFailed(f"argument '{name}' must be >= {minimum}, got {value!r}")
    if maximum is not None and number > maximum:
        raise ActivityFailed(f"argument '{name}' must be <= {maximum}, got {value!r}")
    return number


def require_text(name: str, value: Any) -> str:
    """Return `value` as a non-empty, stripped string."""
    if not isinstance(value, str) or not value.strip():
        raise ActivityFailed(
            f"argument '{name}' must be a non-empty string, got {value!r}"
        )
    return value.strip()


def require_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise ActivityFailed(
            f"argument '{name}' must be one of {', '.join(map(str, choices))}; got {value!r}"
        )
    return value


def require_path(name: str, value: Any, must_exist: bool = True) -> str:
    """Return `value` as an absolute path (``~`` expanded), optionally existing."""
    text = require_text(name, value)
    path = os.path.abspath(os.path.expanduser(text))
    if must_exist and not os.path.exists(path):
        raise ActivityFailed(f"argument '{name}': no such file {path!r}")
    return path
