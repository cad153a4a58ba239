"""HTTP action: one request to the system under test, checked against its status."""

import json as jsonlib
import logging
import time
import urllib.error
import urllib.request

from chaoslib import substitute
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika._validate import require_choice, require_duration, require_url
from chaospika.http._request import BODY_LIMIT, _expected, _headers, _opener

__all__ = ["send_request"]

logger = logging.getLogger("chaostoolkit")

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def send_request(
    url: str,
    method: str = "POST",
    json: dict = None,
    headers: dict = None,
    expected_status: list = None,
    timeout: float = 10.0,
    skip: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Send one request (a JSON body if `json` is given) and check its status.

    Fails unless the status is in `expected_status` (default any 2xx). `${name}`
    forms inside `url` and `json` are filled from the configuration, so a body kept as a
    JSON configuration value may refer to other values. With `skip` true
    nothing is sent ({"skipped": true}): for a step only some systems need.
    Returns {"status", "body" (up to 64 KiB of text), "elapsed_ms"}.
    """
    if skip is True:
        return {"skipped": True}
    url = substitute(url, configuration or {}, secrets or {})
    require_url("url", url, ("http", "https"))
    verb = require_choice(
        "method", method.upper() if isinstance(method, str) else method, METHODS
    )
    limit = require_duration("timeout", timeout, allow_equal=False, maximum=600)
    wanted = _expected(expected_status)
    sent_headers = _headers(headers)
    data = None
    if json is not None:
        if not isinstance(json, dict | list):
            raise ActivityFailed(f"argument 'json' must be an object, got {json!r}")
        body = substitute(json, configuration or {}, secrets or {})
        data = jsonlib.dumps(body).encode()
        sent_headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(
        url.strip(), data=data, method=verb, headers=sent_headers
    )
    started = time.monotonic()
    try:
        with _opener.open(request, timeout=limit) as response:
            status, text = response.status, response.read(BODY_LIMIT)
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read(BODY_LIMIT)
    except (OSError, ValueError) as error:
        raise ActivityFailed(f"{verb} {url}: no answer ({error})") from None
    elapsed_ms = round((time.monotonic() - started) * 1000, 3)
    body_text = text.decode(errors="replace")
    ok = status in wanted if wanted else 200 <= status < 300
    if not ok:
        raise ActivityFailed(
            f"{verb} {url} answered {status}, expected "
            f"{sorted(wanted) if wanted else '2xx'}: {body_text[:300]}"
        )
    logger.info("%s %s -> %s in %.0f ms", verb, url, status, elapsed_ms)
    return {"status": status, "body": body_text, "elapsed_ms": elapsed_ms}
