"""Load actions: run the k6-like load engine inside an experiment."""

import logging

from chaoslib import substitute
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika._validate import require_duration, require_text
from chaospika.load.session import LoadSession, get_session, load_spec_file
from chaospika.loadengine import ScenarioError, running_loads, stop_all, wait_all

__all__ = ["run_load", "stop_all_loads", "stop_load"]

logger = logging.getLogger("chaostoolkit")


def run_load(
    spec: dict = None,
    spec_path: str = None,
    name: str = "load",
    max_duration: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Run a k6-style load (`spec`, or the JSON file `spec_path`) to its end.

    `spec` has k6's options shape: `scenarios` (executor and options, `steps`
    or `exec`), `thresholds`, `tags`. Returns the k6-style summary with
    `thresholds_passed`; the run stays readable under `name` by the probes
    `thresholds_passed`, `metric` and `captured`. Use `"background": true`
    to keep it running while the method applies faults.
    """
    name = require_text("name", name)
    if (spec is None) == (spec_path is None):
        raise ActivityFailed("give exactly one of the arguments 'spec' and 'spec_path'")
    if spec_path is not None:
        try:
            spec = load_spec_file(require_text("spec_path", spec_path))
        except (OSError, ValueError) as error:
            raise ActivityFailed(
                f"argument 'spec_path': cannot read a JSON spec: {error}"
            ) from error
    if not isinstance(spec, dict):
        raise ActivityFailed(f"argument 'spec' must be an object, got {spec!r}")
    # `${name}` forms that came in with a configuration value (a JSON body kept
    # in configuration, say) are filled too.
    spec = substitute(spec, configuration or {}, secrets or {})
    if max_duration is not None:
        max_duration = require_duration("max_duration", max_duration, allow_equal=False)
    running = get_session(name)
    if running is not None and not running.done.is_set():
        raise ActivityFailed(f"argument 'name': a load named {name!r} is running")
    try:
        session = LoadSession(name, spec, max_duration)
    except ScenarioError as error:
        raise ActivityFailed(f"argument 'spec': {error}") from error
    try:
        session.run()
    except ScenarioError as error:  # found only at run time, e.g. exec on k6
        raise ActivityFailed(f"argument 'spec': {error}") from error
    return session.summary()


def stop_load(
    name: str = "load",
    timeout: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Stop the load `name` now (in-flight iterations are interrupted), return its summary.

    Safe to call twice, or after the load has ended by itself. Fails when the
    load has not ended within `timeout` seconds, or ended without a result
    (its run failed: the error is in the message).
    """
    name = require_text("name", name)
    timeout = require_duration("timeout", timeout, allow_equal=False)
    session = get_session(name)
    if session is None:
        raise ActivityFailed(f"argument 'name': no load named {name!r} has started")
    session.stop(timeout)
    if not session.done.is_set():
        raise ActivityFailed(f"load {name!r} did not stop within {timeout:g} s")
    if session.result is None:
        why = repr(session.error) if session.error is not None else "no result"
        raise ActivityFailed(f"load {name!r} ended without a result: {why}")
    return session.summary()


def stop_all_loads(
    timeout: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """Stop every load running in this process, worker processes included.

    Returns how many runs were asked to stop. With `timeout` 0 (the default) it
    only sets their stop flags: no lock, no wait, so a signal handler or an
    atexit hook may call it. With `timeout` > 0 it also waits that long for
    them to end, and fails if some have not.
    """
    asked = stop_all()
    if timeout and timeout > 0 and not wait_all(timeout):
        left = running_loads()
        raise ActivityFailed(f"{left} load runs did not stop within {timeout:g} s")
    return asked
