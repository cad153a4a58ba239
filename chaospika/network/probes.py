"""Network probes: proxies and toxics in force, and what latency did to a load.

`proxy_url` is the base URL of a Toxiproxy-API server (ours or Toxiproxy) and
`proxy` the name of a proxy on it. A probe raises only when it cannot work (the
API unreachable, a bad argument); a missing proxy is an answer.
"""

import logging
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika._validate import require_duration, require_number, require_text
from chaospika.network import client
from chaospika.network.actions import MAX_LATENCY_SECONDS, proxy_api

__all__ = ["latency_table", "proxy_enabled", "proxy_exists", "toxics_in_force"]

logger = logging.getLogger("chaostoolkit")


def proxy_exists(
    proxy_url: str,
    proxy: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """Whether the proxy API at `proxy_url` has a proxy named `proxy`."""
    api = proxy_api(proxy_url)
    return client.get_proxy(api, require_text("proxy", proxy)) is not None


def proxy_enabled(
    proxy_url: str,
    proxy: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """Whether `proxy` exists and is enabled (false while a partition holds)."""
    api = proxy_api(proxy_url)
    shown = client.get_proxy(api, require_text("proxy", proxy))
    return bool(shown and shown.get("enabled"))


def toxics_in_force(
    proxy_url: str,
    proxy: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """The toxics of `proxy` now: {"proxy_found", "enabled", "toxics_count", "toxics"}.

    Each toxic has Toxiproxy's fields (name, type, stream, toxicity, attributes),
    plus `ttl_seconds` (what is left) when the proxy will drop it by itself. A
    proxy that does not exist has none (`proxy_found` false).
    """
    api = proxy_api(proxy_url)
    proxy = require_text("proxy", proxy)
    shown = client.get_proxy(api, proxy)
    if shown is None:
        return {"proxy_found": False, "enabled": False, "toxics_count": 0, "toxics": []}
    toxics = []
    for toxic in shown.get("toxics") or []:
        entry = {
            key: toxic.get(key)
            for key in ("name", "type", "stream", "toxicity", "attributes")
        }
        if toxic.get("ttl") is not None:
            entry["ttl_seconds"] = toxic["ttl"]
        toxics.append(entry)
    return {
        "proxy_found": True,
        "enabled": bool(shown.get("enabled")),
        "toxics_count": len(toxics),
        "toxics": toxics,
    }


def _steps(steps: Any) -> list[tuple[int, str]]:
    if not isinstance(steps, list) or not steps:
        raise ActivityFailed(
            "argument 'steps' must be a non-empty list of "
            f'{{"latency": "50ms", "load": "<load name>"}}, got {steps!r}'
        )
    checked = []
    for number, step in enumerate(steps, 1):
        if not isinstance(step, dict) or "latency" not in step or "load" not in step:
            raise ActivityFailed(
                f"argument 'steps': step {number} needs 'latency' and 'load', got {step!r}"
            )
        seconds = require_duration(
            f"steps[{number}].latency", step["latency"], maximum=MAX_LATENCY_SECONDS
        )
        checked.append(
            (
                round(seconds * 1000.0),
                require_text(f"steps[{number}].load", step["load"]),
            )
        )
    return checked


def _measure(load: str) -> dict[str, Any] | None:
    """p50/p95/p99 of http_req_duration, requests and failures of the load `load`."""
    from chaospika.load.session import get_session

    session = get_session(load)
    if session is None:
        return None

    def read(run: Any) -> dict[str, Any]:
        registry = run.registry
        trend = registry.stats(
            "http_req_duration", trend_stats=["med", "p(95)", "p(99)"]
        )
        requests = int(registry.stats("http_reqs", duration=registry.elapsed)["count"])
        failed = int(registry.stats("http_req_failed")["passes"])
        return {
            "p50_ms": round(trend["med"], 2),
            "p95_ms": round(trend["p(95)"], 2),
            "p99_ms": round(trend["p(99)"], 2),
            "requests_count": requests,
            "errors_count": failed,
            "error_ratio": round(failed / requests, 6) if requests else None,
            "finished": session.done.is_set(),
        }

    return session.ask(read)


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| Latency Added | API p50 | API p95 | API p99 | Errors | requests |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["error_ratio"] or 0.0
        lines.append(
            f"| {row['latency_ms']}ms | {row['p50_ms']:.1f}ms | {row['p95_ms']:.1f}ms "
            f"| {row['p99_ms']:.1f}ms | {ratio * 100:.2f}% | {row['requests_count']} |"
        )
    return "\n".join(lines)


def latency_table(
    steps: list,
    p99_slack: str = "50ms",
    p50_tolerance: float = 0.25,
    max_error_ratio: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """The API latency under each added network latency, and whether it stays in bounds.

    `steps` lists what was measured: ``[{"latency": "0ms", "load": "orders-0ms"},
    {"latency": "50ms", "load": "orders-50ms"}, ...]``, each `load` the name of a
    load run (chaospika.load.actions.run_load) made while that latency was in
    force; the step of the lowest latency is the baseline. Each row gives
    `latency_ms`, `p50_ms`, `p95_ms`, `p99_ms` (http_req_duration),
    `requests_count`, `errors_count`, `error_ratio`, and the increases over the
    baseline. In bounds when, for every step: the p50 increase is the added
    latency within ± `p50_tolerance` of it (0.25: 75 to 125 ms at +100 ms; too
    little means the latency did not reach the system — a proxy not on its
    path —, too much that one request pays it more than once); the p99 increase
    is at most the added latency plus `p99_slack` (a duration: "50ms"); the
    error ratio is at most `max_error_ratio`. Before any of the loads has run, the table is empty
    and `ran` is false (nothing to judge yet: in bounds). `markdown` is the table.
    """
    checked = _steps(steps)
    slack_ms = require_duration("p99_slack", p99_slack, maximum=600) * 1000.0
    share = require_number("p50_tolerance", p50_tolerance, maximum=1.0)
    max_errors = require_number("max_error_ratio", max_error_ratio, maximum=1.0)
    measured = [(latency, load, _measure(load)) for latency, load in checked]
    missing = [load for _, load, found in measured if found is None]
    if len(missing) == len(measured):
        return {
            "ran": False,
            "within_bounds": True,
            "violations": [],
            "table": [],
            "markdown": "",
        }
    violations = [f"load {load!r} has not run" for load in missing]
    rows = [
        {"latency_ms": latency, "load": load, **found}
        for latency, load, found in measured
        if found is not None
    ]
    rows.sort(key=lambda row: row["latency_ms"])
    base = rows[0]
    for row in rows:
        if not row.pop("finished"):
            violations.append(f"load {row['load']!r} is still running")
        added = row["latency_ms"] - base["latency_ms"]
        row["p50_increase_ms"] = round(row["p50_ms"] - base["p50_ms"], 2)
        row["p99_increase_ms"] = round(row["p99_ms"] - base["p99_ms"], 2)
        row["max_p99_increase_ms"] = round(added + slack_ms, 2)
        where = f"at +{row['latency_ms']} ms"
        if row["p99_increase_ms"] > row["max_p99_increase_ms"]:
            violations.append(
                f"{where}: p99 rose by {row['p99_increase_ms']} ms, more than "
                f"{row['max_p99_increase_ms']} ms (the latency + {slack_ms:g} ms)"
            )
        low, high = (1 - share) * added, (1 + share) * added
        if added > 0 and row["p50_increase_ms"] < low:
            violations.append(
                f"{where}: p50 rose by only {row['p50_increase_ms']} ms (< {low:g} ms): "
                "the latency did not reach the system (is the proxy on its path?)"
            )
        elif added > 0 and row["p50_increase_ms"] > high:
            violations.append(
                f"{where}: p50 rose by {row['p50_increase_ms']} ms (> {high:g} ms): "
                "a request pays the added latency more than once"
            )
        if not row["requests_count"]:
            violations.append(f"{where}: the load {row['load']!r} sent no request")
        elif row["error_ratio"] > max_errors:
            violations.append(
                f"{where}: {row['errors_count']} of {row['requests_count']} requests "
                f"failed (ratio {row['error_ratio']}, at most {max_errors:g})"
            )
    table = _markdown(rows)
    logger.info("API latency by added network latency:\n%s", table)
    return {
        "ran": True,
        "within_bounds": not violations,
        "violations": violations,
        "table": rows,
        "markdown": table,
    }
