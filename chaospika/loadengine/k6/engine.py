"""`run_k6(spec)`: one k6 process (runner.py), or `"segments": N` of them (segments.py)."""

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaospika.loadengine.k6.runner import _K6Run, find_k6
from chaospika.loadengine.k6.script import reject_exec, translate
from chaospika.loadengine.k6.segments import run_segments
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.runner import LoadResult, ProgressCallback, run_deadline
from chaospika.loadengine.scenario import LoadSpec, as_spec

__all__ = ["run_k6"]


def run_k6(
    spec: Mapping | LoadSpec,
    *,
    max_duration: float | None = None,
    stop_event: Any = None,
    on_progress: ProgressCallback | None = None,
    registry: Registry | None = None,
) -> LoadResult:
    """Run `spec` on k6 to its end (blocks); the result has the pika engine's shape.

    k6's samples go to `registry` (default: a new one from the spec).
    """
    reject_exec(spec.raw if isinstance(spec, LoadSpec) else spec)
    load = as_spec(spec)
    if registry is None:
        registry = load.new_registry()
    script = translate(load)
    deadline = run_deadline(load, max_duration)
    binary = find_k6()
    if load.segments > 1:  # N k6 processes, one execution segment each
        return run_segments(
            load, registry, script, binary, deadline, stop_event, on_progress
        )
    with tempfile.TemporaryDirectory(prefix="pika-k6-") as folder:
        k6_run = _K6Run(load, registry, script, binary, Path(folder), deadline)
        return k6_run.run(stop_event, on_progress)
