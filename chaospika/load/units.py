"""k6-style durations ("1m30s", "250ms", "2h") and plain numbers of seconds."""

import re
from typing import Any

from chaospika.load.errors import ScenarioError

__all__ = ["format_duration", "parse_duration"]

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|s|m|h)")
_SCALE = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(field: str, value: Any, allow_zero: bool = True) -> float:
    """Return `value` in seconds; numbers are seconds, strings use k6 units."""
    if isinstance(value, bool):
        raise ScenarioError(field, f"expected a duration such as '30s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
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


def format_duration(seconds: float) -> str:
    """Render seconds the way k6 prints durations ("1m30s", "250ms")."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{rest:g}s" if rest or not text else "")
