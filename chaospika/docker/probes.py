"""Container probes: running, health, restart count, time until healthy again.

Containers are matched as by the actions (exact `name`, label `selector`,
anchored `name_pattern`; every criterion given must hold), all of them, in any
state. A container that is missing, stopped or unhealthy is reported as data;
a probe raises only when it cannot ask the engine (or its arguments are wrong).
"""

import logging
import time
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaospika._validate import require_duration
from chaospika.docker import _engine, _select

__all__ = [
    "container_status",
    "containers_running",
    "restart_count",
    "time_until_healthy",
]

logger = logging.getLogger("chaostoolkit")

MAX_POLLS = 100_000


def _matched(client: Any, name: Any, selector: Any, name_pattern: Any) -> list[dict]:
    crit = _select.criteria(name, selector, name_pattern)
    summaries = _select.matched(client.containers(all=True), crit)
    facts = []
    for summary in summaries:
        document = _engine.find(client, summary["Id"])
        if document is not None:
            facts.append(_engine.facts(document))
    if not facts:
        logger.warning("docker: no container matches %s", crit.describe())
    return facts


def _healthy(facts: dict) -> bool:
    """Running, and healthy if it has a health check."""
    return facts["running"] and facts["health"] in (None, "healthy")


def container_status(
    name: str = None,
    selector: str = None,
    name_pattern: str = None,
    docker_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """State of the matched containers.

    Returns {"containers": [{name, id, status, running, paused, health (None
    without a health check), restart_count, restart_policy, exit_code,
    started_at}], "count", "running_count", "healthy_count"}.
    """
    _select.criteria(name, selector, name_pattern)
    url = _engine.docker_url(docker_url)
    with _engine.connected(url) as client:
        facts = _matched(client, name, selector, name_pattern)
    return {
        "containers": facts,
        "count": len(facts),
        "running_count": sum(1 for f in facts if f["running"]),
        "healthy_count": sum(1 for f in facts if _healthy(f)),
    }


def containers_running(
    name: str = None,
    selector: str = None,
    name_pattern: str = None,
    docker_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """True if at least one container matches and every one matched is running
    (not paused); False otherwise (none matching included)."""
    _select.criteria(name, selector, name_pattern)
    url = _engine.docker_url(docker_url)
    with _engine.connected(url) as client:
        facts = _matched(client, name, selector, name_pattern)
    return bool(facts) and all(f["running"] for f in facts)


def restart_count(
    name: str = None,
    selector: str = None,
    name_pattern: str = None,
    docker_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """How often the engine restarted the matched containers (their restart
    policy; a `docker start` or `docker restart` by hand does not count).

    Returns {"restart_count": total, "containers": {name: count}}.
    """
    _select.criteria(name, selector, name_pattern)
    url = _engine.docker_url(docker_url)
    with _engine.connected(url) as client:
        facts = _matched(client, name, selector, name_pattern)
    return {
        "restart_count": sum(f["restart_count"] for f in facts),
        "containers": {f["name"]: f["restart_count"] for f in facts},
    }


def time_until_healthy(
    name: str = None,
    selector: str = None,
    name_pattern: str = None,
    timeout: float = 30,
    interval: float = 0.1,
    docker_url: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Wait up to `timeout` until every matched container runs and, if it has a
    health check, is healthy.

    Returns {"healthy": bool, "elapsed_seconds", "containers": {name: {"status",
    "health"}}, "count"}; ``healthy`` is false when nothing matches.
    """
    limit = require_duration("timeout", timeout, maximum=3600)
    step = require_duration("interval", interval, allow_equal=False, maximum=60)
    _select.criteria(name, selector, name_pattern)
    url = _engine.docker_url(docker_url)
    started = time.monotonic()
    with _engine.connected(url) as client:
        for _ in range(MAX_POLLS):
            facts = _matched(client, name, selector, name_pattern)
            healthy = bool(facts) and all(_healthy(f) for f in facts)
            elapsed = time.monotonic() - started
            if healthy or elapsed >= limit:
                break
            time.sleep(min(step, max(0.0, limit - elapsed)))
    return {
        "healthy": healthy,
        "elapsed_seconds": round(elapsed, 3),
        "containers": {
            f["name"]: {"status": f["status"], "health": f["health"]} for f in facts
        },
        "count": len(facts),
    }
