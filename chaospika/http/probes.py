"""HTTP probe: how available a URL was over a short window, and for how long it was not."""

import http.client
import math
import time
import urllib.error
import urllib.request
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika._validate import require_choice, require_int, require_number, require_url

__all__ = ["availability"]

MAX_ATTEMPTS = 100_000
BODY_LIMIT = 64 * 1024
METHODS = ("GET", "HEAD", "OPTIONS")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report 3xx answers as they are instead of following them."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# Straight to the service: no proxy from the environment, no redirects followed.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _expected(expected_status: Any) -> set[int] | None:
    if expected_status is None:
        return None
    codes = [expected_status] if isinstance(expected_status, int) else expected_status
    if not isinstance(codes, list) or not codes:
        raise ActivityFailed(
            "argument 'expected_status' must be a list of HTTP status codes, "
            f"got {expected_status!r}"
        )
    return {require_int("expected_status", code, 100, 599) for code in codes}


def _headers(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(
        isinstance(key, str) and key.strip() for key in headers
    ):
        raise ActivityFailed(
            f"argument 'headers' must map header names to values, got {headers!r}"
        )
    return {key: str(value) for key, value in headers.items()}


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


def availability(
    url: str,
    window: float = 2.0,
    interval: float = 0.1,
    timeout: float = 1.0,
    expected_status: list = None,
    method: str = "GET",
    headers: dict = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Sample `url` every `interval` seconds for `window` seconds.

    At most window/interval + 1 requests, one at a time, each with `timeout`
    seconds per network operation; no proxy, redirects not followed. A success is
    a status in `expected_status` (default: any 2xx or 3xx). Returns {"ratio":
    successes/attempts, "attempts", "failures", "longest_outage_seconds" (from a
    failure to the next success or the end), "statuses": {"200": n, "error": n},
    "p95_ms" (latency of the answered requests)}.
    """
    require_url("url", url, ("http", "https"))
    span = require_number("window", window, allow_equal=False, maximum=3600)
    step = require_number("interval", interval, allow_equal=False, maximum=3600)
    limit = require_number("timeout", timeout, allow_equal=False, maximum=300)
    wanted = _expected(expected_status)
    verb = require_choice(
        "method", method.upper() if isinstance(method, str) else method, METHODS
    )
    count = int(span / step + 1e-9) + 1
    if count > MAX_ATTEMPTS:
        raise ActivityFailed(
            f"argument 'interval' is too small: {count} requests over the window "
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
    failures = sum(1 for _, _, ok in samples if not ok)
    return {
        "ratio": round((len(samples) - failures) / len(samples), 4),
        "attempts": len(samples),
        "failures": failures,
        "longest_outage_seconds": _longest_outage(samples),
        "statuses": statuses,
        "p95_ms": _p95_ms(latencies),
    }
