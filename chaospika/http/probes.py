"""HTTP probe: how available a URL was over a short window, and for how long it was not."""

import http.client
import math
import time
import urllib.error
import urllib.request
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika._validate import require_choice, require_duration, require_url
from chaospika.http._request import BODY_LIMIT, _expected, _headers, _opener

__all__ = ["availability"]

MAX_ATTEMPTS = 100_000
METHODS = ("GET", "HEAD", "OPTIONS")


def _attempt(request: urllib.request.Request, timeout: float) -> int | None:
    """Send one request; return its HTTP status, or None if there was no answer."""
    try:
        with _opener.open(request, timeout=timeout) as response:
            response.read(BODY_LIMIT)
            return response.status
    except urllib.error.HTTPError as error:
        error.close()
        return error.code
    except (OSError, http.client.HTTPException):
        return None  # refused, reset, timed out, malformed answer


def _longest_outage(samples: list[tuple[float, float, bool]]) -> float:
    """Longest time from a failure to the next success (or the end of sampling)."""
    longest, outage_began = 0.0, None
    for began, _, ok in samples:
        if ok and outage_began is not None:
            longest = max(longest, began - outage_began)
            outage_began = None
        elif not ok and outage_began is None:
            outage_began = began
    if outage_began is not None:
        longest = max(longest, samples[-1][1] - outage_began)
    return round(longest, 3)


def _p95_ms(latencies: list[float]) -> float | None:
    """95th percentile (nearest rank) in milliseconds."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    return round(ordered[math.ceil(0.95 * len(ordered)) - 1] * 1000, 2)


def _sample(
    url: Any,
    duration: Any,
    interval: Any,
    timeout: Any,
    expected_status: Any,
    method: Any,
    headers: Any,
) -> tuple[list[tuple[float, float, bool]], dict[str, int], list[float], float]:
    """Request `url` every `interval` for `duration` (the arguments checked first).

    Returns (samples as (began, ended, ok), statuses by code or "error", latencies
    of the answered requests, monotonic start). Shared by `availability` and the
    Kubernetes `downtime` probe.
    """
    require_url("url", url, ("http", "https"))
    span = require_duration("duration", duration, allow_equal=False, maximum=3600)
    step = require_duration("interval", interval, allow_equal=False, maximum=3600)
    limit = require_duration("timeout", timeout, allow_equal=False, maximum=300)
    wanted = _expected(expected_status)
    verb = require_choice(
        "method", method.upper() if isinstance(method, str) else method, METHODS
    )
    count = int(span / step + 1e-9) + 1
    if count > MAX_ATTEMPTS:
        raise ActivityFailed(
            f"argument 'interval' is too small: {count} requests over the duration "
            f"(at most {MAX_ATTEMPTS})"
        )
    request = urllib.request.Request(
        url.strip(), method=verb, headers=_headers(headers)
    )
    samples, statuses, latencies = [], {}, []
    started = time.monotonic()
    for number in range(count):
        now = time.monotonic()
        if number and now - started > span:
            break  # slow answers ate the window
        time.sleep(max(0.0, started + number * step - now))
        began = time.monotonic()
        status = _attempt(request, limit)
        ended = time.monotonic()
        ok = status is not None and (
            status in wanted if wanted else 200 <= status < 400
        )
        samples.append((began, ended, ok))
        key = "error" if status is None else str(status)
        statuses[key] = statuses.get(key, 0) + 1
        if status is not None:
            latencies.append(ended - began)
    return samples, statuses, latencies, started


def availability(
    url: str,
    duration: float = 2.0,
    interval: float = 0.1,
    timeout: float = 1.0,
    expected_status: list = None,
    method: str = "GET",
    headers: dict = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Sample `url` every `interval` for `duration` (seconds or "2s", "100ms").

    At most duration/interval + 1 requests, one at a time, each with `timeout`
    per network operation; no proxy, redirects not followed. A success is
    a status in `expected_status` (default: any 2xx or 3xx). Returns {"ratio":
    successes/attempts, "attempts", "failures", "longest_outage_seconds" (from a
    failure to the next success or the end), "statuses": {"200": n, "error": n},
    "p95_ms" (latency of the answered requests)}.
    """
    samples, statuses, latencies, _ = _sample(
        url, duration, interval, timeout, expected_status, method, headers
    )
    failures = sum(1 for _, _, ok in samples if not ok)
    return {
        "ratio": round((len(samples) - failures) / len(samples), 4),
        "attempts": len(samples),
        "failures": failures,
        "longest_outage_seconds": _longest_outage(samples),
        "statuses": statuses,
        "p95_ms": _p95_ms(latencies),
    }
