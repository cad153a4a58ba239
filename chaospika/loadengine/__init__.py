"""chaospika's load engine: k6's options, executors, metrics and thresholds in Python.

It knows nothing of Chaos Toolkit: `chaospika.load` (activities, control, CLI)
is its edge and uses only the names below. A spec (k6's options shape, JSON)
is checked by `parse_spec`, run by `run` / `run_async` or as a stoppable
`LoadRun` handle; each run records into its own `Registry`, returned in the
`LoadResult` with the threshold verdicts and k6's end-of-test summary.

    from chaospika.loadengine import parse_spec, run
    result = run(parse_spec({"vus": 2, "duration": "5s", "steps": [...]}))
    result.thresholds_passed, result.registry.stats("http_req_duration")
"""

import argparse

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.launch import LoadRun, run, run_async
from chaospika.loadengine.lifecycle import running_loads, stop_all, wait_all
from chaospika.loadengine.output import open_output, parse_out
from chaospika.loadengine.progress import progress_line, progress_parts, wrap_parts
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.runner import LoadResult, run_deadline
from chaospika.loadengine.scenario import LoadSpec, parse_spec
from chaospika.loadengine.shortcuts import override
from chaospika.loadengine.summary import data as summary_data
from chaospika.loadengine.tags import parse_selector
from chaospika.loadengine.thresholds import ThresholdSet, parse_thresholds
from chaospika.loadengine.units import parse_duration
from chaospika.loadengine.ws import WsClosed, WsError, WsSession


def add_operator_command(actions: argparse._SubParsersAction) -> None:
    """Add `load k6-operator` (k6/operator.py, imported only now: a pika-engine
    run needs none of the k6 modules)."""
    from chaospika.loadengine.k6.operator import add_operator_command as add

    add(actions)


__all__ = [
    "LoadResult",
    "LoadRun",
    "LoadSpec",
    "Registry",
    "ScenarioError",
    "ThresholdSet",
    "WsClosed",
    "WsError",
    "WsSession",
    "add_operator_command",
    "open_output",
    "override",
    "parse_duration",
    "parse_out",
    "parse_selector",
    "parse_spec",
    "parse_thresholds",
    "progress_line",
    "progress_parts",
    "run",
    "run_async",
    "run_deadline",
    "running_loads",
    "stop_all",
    "summary_data",
    "wait_all",
    "wrap_parts",
]
