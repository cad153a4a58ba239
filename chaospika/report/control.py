"""A Chaos Toolkit control that keeps each load's per-second series in the journal.

The load engine keeps one point per metric and second (`Registry.series`) but
the journal gets only the end-of-test summary. This control copies the series
of the charted metrics into the journal under ``pika_series`` so that
`chaospika report` can draw request rate, latency and errors over time.
`chaospika run` passes it to every run with ``chaos run --control-file``;
declare it in an experiment to get the same from a plain ``chaos run``::

    "controls": [{"name": "load-series", "provider": {
        "type": "python", "module": "chaospika.report.control"}}]

``pika_series`` is ``{load name: {"metrics": {metric: [point, ...]}}}``; a point
has ``t`` (seconds since the load started, at the end of its second) and that
second's aggregates (`count`/`rate`, `passes`/`total`/`rate`, `value`, or
`count`/`avg`/`p(95)`/`max`). The series are read when the controls are cleaned
up, after every other control has ended (a load run by `chaospika.load.control`
is stopped by then).
"""

import logging
from typing import Any

from chaoslib.types import Configuration, Experiment, Journal, Secrets

from chaospika.report.facts import load_names

__all__ = [
    "SERIES_METRICS",
    "after_experiment_control",
    "before_experiment_control",
    "cleanup_control",
    "read_series",
]

logger = logging.getLogger("chaostoolkit")

# What the report charts and summarizes; `metrics` adds others.
SERIES_METRICS = (
    "http_reqs",
    "http_req_duration",
    "http_req_failed",
    "iterations",
    "vus",
    "checks",
    "ws_msg_latency",
    "ws_connecting",
    "ws_sessions",
    "ws_msgs_received",
)
READ_TIMEOUT_S = 10.0
DIGITS = 4

_state: dict[str, Any] = {"journal": None, "metrics": SERIES_METRICS}


def _rounded(point: dict) -> dict:
    return {
        key: round(value, DIGITS) if isinstance(value, float) else value
        for key, value in point.items()
    }


def read_series(name: str, metrics: tuple[str, ...]) -> dict | None:
    """The per-second series of `metrics` of the load `name` in this process, or None."""
    from chaospika.load.session import get_session  # the engine is in this process

    session = get_session(name)
    if session is None:
        return None

    def read(load: Any) -> dict:
        series = load.registry.series
        return {
            metric: [_rounded(point) for point in series[metric]]
            for metric in metrics
            if metric in series
        }

    if not session.done.is_set():
        session.done.wait(READ_TIMEOUT_S)  # a load control may be stopping it
    return {"metrics": session.ask(read), "finished": session.done.is_set()}


def before_experiment_control(
    context: Experiment,
    metrics: list = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Start a new run: forget the previous journal; `metrics` adds series to keep."""
    extra = tuple(m for m in metrics or () if isinstance(m, str))
    _state["journal"] = None
    _state["metrics"] = SERIES_METRICS + tuple(
        m for m in extra if m not in SERIES_METRICS
    )


def after_experiment_control(
    context: Experiment,
    state: Journal,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Keep the journal: its series are added at cleanup, once every load has ended."""
    if isinstance(state, dict):
        _state["journal"] = state


def cleanup_control() -> None:
    """Write ``pika_series`` into the journal of the run that just ended."""
    journal, _state["journal"] = _state["journal"], None
    if journal is None:
        return
    kept: dict[str, dict] = {}
    for name in load_names(journal):
        try:
            series = read_series(name, _state["metrics"])
        except Exception as error:  # noqa: BLE001 - the report must not break a run
            logger.warning(
                "load-series control: cannot read load '%s': %s", name, error
            )
            series = {"metrics": {}, "error": f"{type(error).__name__}: {error}"}
        if series is not None:
            kept[name] = series
    journal["pika_series"] = kept
    logger.debug(
        "load-series control: kept the series of %s", ", ".join(kept) or "none"
    )
