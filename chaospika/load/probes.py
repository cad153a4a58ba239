"""Load probes: what a load of this experiment measured, live or at its end."""

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika import _records
from chaospika._validate import require_text
from chaospika.load.session import RECORD_KIND, LoadSession, get_session
from chaospika.loadengine import Registry, ScenarioError, parse_selector

__all__ = ["captured", "load_failures", "metric", "thresholds_passed", "time_series"]


def _session(name: str) -> LoadSession:
    session = get_session(require_text("name", name))
    if session is None:
        raise ActivityFailed(f"argument 'name': no load named {name!r} has started")
    return session


def _selector(metric: str) -> str:
    """`metric` checked as a metric name or a `name{tag:value}` selector."""
    metric = require_text("metric", metric)
    try:
        parse_selector("metric", metric)
    except ScenarioError as error:
        raise ActivityFailed(f"argument 'metric': {error.message}") from error
    return metric


def _require_tracked(registry: Registry, metric: str) -> None:
    """Fail, naming the argument, when the registry does not track `metric`."""
    if metric in registry:
        return
    if "{" in metric:
        raise ActivityFailed(
            f"argument 'metric': the sub-metric {metric} is not tracked; "
            "name it in a threshold of the spec so it is kept from the start"
        )
    raise ActivityFailed(f"argument 'metric': no metric named {metric!r}")


def thresholds_passed(
    name: str = "load", configuration: Configuration = None, secrets: Secrets = None
) -> bool:
    """Whether every threshold of the load `name` holds (live while it runs)."""
    verdicts = _session(name).thresholds()
    return all(all(per_metric.values()) for per_metric in verdicts.values())


def metric(
    name: str = "load",
    metric: str = "http_req_duration",
    stat: str = "p(95)",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """One k6 statistic of a metric of the load `name`, e.g. `p(95)`, `rate`, `count`.

    `metric` may select a sub-metric by tags: `http_req_duration{scenario:orders}`.
    """
    session = _session(name)
    metric = _selector(metric)
    stat = require_text("stat", stat)

    def read(run):
        registry = run.registry
        _require_tracked(registry, metric)
        try:
            stats = registry.stats(metric, trend_stats=[stat])
        except ScenarioError as error:
            raise ActivityFailed(f"argument 'stat': {error.message}") from error
        if stat not in stats:
            raise ActivityFailed(
                f"argument 'stat': {metric} has {', '.join(stats)}, not {stat!r}"
            )
        return stats[stat]

    return session.ask(read)


def time_series(
    name: str = "load",
    metric: str = "http_reqs",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> list:
    """The per-second points of one metric of the load `name` (live while it runs).

    Each point has `t` (seconds since the start) and that second's aggregates:
    `count` and `rate` for a counter, `passes`, `total` and `rate` for a rate,
    `value` for a gauge, `count`, `avg`, `p(95)` and `max` for a trend. A second
    with no sample has no point. `metric` may be a sub-metric tracked by a threshold.
    """
    session = _session(name)
    metric = _selector(metric)

    def read(run):
        _require_tracked(run.registry, metric)
        return [dict(point) for point in run.registry.series.get(metric, [])]

    return session.ask(read)


def load_failures(
    name: str = "load", configuration: Configuration = None, secrets: Secrets = None
) -> dict:
    """Failed requests of the load `name` so far (k6's `http_req_failed`).

    Before the load has started, `ran` is false and no request has failed.
    """
    session = get_session(require_text("name", name))
    if session is None:
        return {"ran": False, "requests": 0, "failed": 0, "ratio": None}

    def read(run):
        registry = run.registry
        requests = registry.stats("http_reqs", duration=registry.elapsed)["count"]
        failed = registry.stats("http_req_failed")["passes"]
        return {
            "ran": True,
            "running": not session.done.is_set(),
            "requests": int(requests),
            "failed": int(failed),
            "ratio": round(1 - failed / requests, 6) if requests else None,
        }

    return session.ask(read)


def captured(
    name: str = "load",
    key: str = "order_id",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> list:
    """Values the load `name` captured under `key` (e.g. acknowledged order ids).

    Live while the load runs (what it has captured up to its last one-second
    tick; a multi-process load: what its workers reported by then; engine k6:
    nothing before the end), then every value it kept.
    """
    name = require_text("name", name)
    key = require_text("key", key)
    session = get_session(name)
    if session is not None and not session.done.is_set():
        return session.captured(key)
    record = _records.get(RECORD_KIND, name) or {}
    return list(record.get("captures", {}).get(key, []))
