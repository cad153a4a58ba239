"""What the HTTP activities share: a direct opener and checks of statuses and headers."""

import urllib.request
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaospika._validate import require_int

__all__ = ["BODY_LIMIT", "_expected", "_headers", "_opener"]

# The most of a response body an activity reads (and returns).
BODY_LIMIT = 64 * 1024


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
