"""k6-style durations ("1m30s", "250ms", "2h") and plain numbers.

A number in a k6 option (duration, startTime, gracefulStop, timeUnit, stages,
maxDuration, gracefulRampDown, delayAbortEval) is milliseconds, as in k6
(`"duration": 2000` is 2 s): those callers pass `per_second=1000`. Elsewhere (a
step's think time or request timeout, other chaospika modules) a number is seconds.
"""

import re
from typing import Any

from chaospika.loadengine.errors import ScenarioError

__all__ = ["OPTION_NUMBERS", "parse_duration"]

OPTION_NUMBERS = 1000.0  # per_second of k6 options: their numbers are milliseconds

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|s|m|h)")
_SCALE = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(
    field: str, value: Any, allow_zero: bool = True, per_second: float = 1.0
) -> float:
    """Return `value` in seconds; numbers count 1/per_second s, strings use k6 units."""
    if isinstance(value, bool):
        raise ScenarioError(field, f"expected a duration such as '30s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value) / per_second
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ScenarioError(
                field, f"malformed duration {value!r} (expected e.g. '500ms', '1m30s')"
            )
        seconds = sum(float(n) * _SCALE[u] for n, u in parts)
    else:
        raise ScenarioError(field, f"expected a duration such as '30s', got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ScenarioError(
            field, f"duration must be {'>=' if allow_zero else '>'} 0, got {value!r}"
        )
    return seconds
