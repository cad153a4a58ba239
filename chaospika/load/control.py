"""A Chaos Toolkit control that runs a load for the whole experiment.

It starts before the steady-state hypothesis (so the baseline is measured
under load too) and stops after the rollbacks, then writes the load's summary
into the journal under ``pika_loads``::

    "controls": [{"name": "background-load", "provider": {
        "type": "python", "module": "chaospika.load.control",
        "arguments": {"name": "baseline", "spec_path": "load/orders.json"}}}]
"""

import logging
from typing import Any

from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Experiment, Journal, Secrets

from chaospika.load.session import LoadSession, get_session, load_spec_file
from chaospika.loadengine import ScenarioError

__all__ = ["after_experiment_control", "before_experiment_control"]

logger = logging.getLogger("chaostoolkit")


def before_experiment_control(
    context: Experiment,
    name: str = "load",
    spec: dict = None,
    spec_path: str = None,
    max_duration: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Start the load `name` in the background before anything else runs."""
    if (spec is None) == (spec_path is None):
        raise InterruptExecution(
            "load control: give exactly one of the arguments 'spec' and 'spec_path'"
        )
    try:
        session = LoadSession(
            name, spec if spec is not None else load_spec_file(spec_path), max_duration
        )
    except (ScenarioError, OSError, ValueError) as error:
        raise InterruptExecution(f"load control '{name}': {error}") from error
    logger.info("load control: starting load '%s' for the whole experiment", name)
    session.start()


def after_experiment_control(
    context: Experiment,
    state: Journal,
    name: str = "load",
    timeout: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Stop the load `name` after the rollbacks and record its summary in the journal."""
    session = get_session(name)
    if session is None:
        return
    session.stop(timeout)
    summary = session.summary()
    if not session.done.is_set():
        summary["error"] = f"the load did not stop within {timeout:g} s"
        logger.error("load control: load '%s' did not stop within %g s", name, timeout)
    if isinstance(state, dict):
        state.setdefault("pika_loads", {})[name] = summary
    logger.info(
        "load control: load '%s' stopped; thresholds passed: %s",
        name,
        summary.get("thresholds_passed"),
    )
