"""Reading a finished k6 run back: verdicts, duration, captures, logs.

k6's `--summary-export` maps each threshold expression to *failed* (true when
crossed); `verdicts` turns that into the pika engine's {metric: {expression:
passed}}. The console file holds the script's capture and warning lines
(prelude.py), one JSON log record a line (`--log-format json`).
"""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.k6.prelude import CAPTURE_PREFIX, WARNING_PREFIX
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.scenario import LoadSpec
from chaospika.loadengine.tags import parse_selector

__all__ = ["json_lines", "read_console", "run_duration", "tail", "verdicts"]


def read_console(path: Path, scenarios: Iterable[str]) -> tuple[dict, list[str]]:
    """Captured values {scenario: {name: [values]}} and the template warnings."""
    captures: dict[str, dict[str, list]] = {name: {} for name in scenarios}
    warnings: list[str] = []
    for line in json_lines(path):
        message = str(line.get("msg", ""))
        if message.startswith(CAPTURE_PREFIX):
            scenario, name, value = json.loads(message[len(CAPTURE_PREFIX) :])
            captures.setdefault(scenario, {}).setdefault(name, []).append(value)
        elif message.startswith(WARNING_PREFIX):
            text = json.loads(message[len(WARNING_PREFIX) :])
            if text not in warnings:
                warnings.append(text)
    return captures, warnings


def verdicts(
    load: LoadSpec, registry: Registry, export: dict, duration: float
) -> tuple[dict[str, dict[str, bool]], list[str]]:
    """{metric: {expression: passed}} from k6's export (it maps to *failed*)."""
    metrics = export.get("metrics", {})
    by_selector = {}
    for key, values in metrics.items():
        if "thresholds" in values:
            try:
                by_selector[_normal(key)] = values["thresholds"]
            except ScenarioError:
                continue
    result: dict[str, dict[str, bool]] = {}
    missing: list[str] = []
    for threshold in load.thresholds:
        marks = metrics.get(threshold.metric, {}).get("thresholds")
        if marks is None:
            marks = by_selector.get(_normal(threshold.metric), {})
        if threshold.source in marks:
            passed = not marks[threshold.source]
        else:
            passed = threshold.evaluate(registry, duration)
            if threshold.metric not in missing:
                missing.append(threshold.metric)
        result.setdefault(threshold.metric, {})[threshold.source] = passed
    return result, missing


def _normal(selector: str) -> tuple:
    name, tags = parse_selector("thresholds", selector)
    return name.strip(), tuple(sorted(tags))


def run_duration(export: dict) -> float | None:
    """k6's test run duration: a counter's count over its rate (k6 divides so)."""
    for values in export.get("metrics", {}).values():
        count, rate = values.get("count"), values.get("rate")
        numbers = all(isinstance(v, (int, float)) for v in (count, rate))
        if numbers and count > 0 and rate > 0:
            return count / rate
    return None


def json_lines(path: Path) -> Iterator[dict]:
    """The JSON objects of a k6 log file, one a line (other lines skipped)."""
    if not path.exists():
        return
    with open(path, errors="replace") as handle:
        for text in handle:
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict):
                yield line


def tail(path: Path, size: int = 2000) -> str:
    """The last `size` characters of a text file ("" if it is missing)."""
    if not path.exists():
        return ""
    return path.read_text(errors="replace")[-size:]
