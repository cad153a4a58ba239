"""`--out json=FILE`: every sample as k6's JSON lines, which k6's own tools read.

k6 1.1.0 writes, for each metric the first time a sample of it is seen, a line

    {"type":"Metric","data":{"name":..,"type":..,"contains":..,"thresholds":[..],
     "submetrics":[{"name":..,"suffix":..,"tags":{..}}] or null},"metric":..}

then one line per sample:

    {"metric":..,"type":"Point","data":{"time":"2026-..T..Z","value":..,"tags":{..}}}

`JsonLinesOutput.attach(registry)` makes the registry copy every sample it
records to the file (an instance attribute shadows `Registry.add`, so a run
without --out pays nothing). Lines are buffered and written by the recording
thread; `close()` flushes. A run with `processes` > 1 records in its worker
processes and cannot be written this way (the CLI says so: exit 104).
"""

import json
import time
from collections.abc import Callable
from typing import Any, TextIO

from chaospika.load.metrics import Registry

__all__ = ["JsonLinesOutput", "parse_out"]

FORMATS = ("json",)


def parse_out(value: str) -> tuple[str, str]:
    """`json=FILE` -> ("json", FILE); ValueError naming what is expected."""
    kind, sep, path = value.partition("=")
    if kind not in FORMATS or not sep or not path:
        raise ValueError(
            f"--out {value!r}: expected json=FILE (k6's JSON lines), e.g. json=out.jsonl"
        )
    return kind, path


def _rfc3339(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{fraction:09d}Z"


class JsonLinesOutput:
    """Writes the samples of one registry to a file as k6's JSON lines."""

    def __init__(self, handle: TextIO, thresholds: dict[str, list[str]]) -> None:
        self.handle = handle
        self.thresholds = thresholds  # {metric or sub-metric name: [sources]}
        self.seen: set[str] = set()
        self.registry: Registry | None = None
        self.lines: list[str] = []

    def attach(self, registry: Registry) -> None:
        """Copy every sample `registry` records to the file from now on."""
        self.registry = registry
        recorded: Callable[[str, Any, dict | None], None] = Registry.add.__get__(
            registry
        )
        write = self.point

        def add(name: str, value: Any, tags: dict | None = None) -> None:
            recorded(name, value, tags)
            write(name, value, tags)

        registry.add = add  # type: ignore[method-assign]

    def point(self, name: str, value: Any, tags: dict | None) -> None:
        if name not in self.seen:
            self.seen.add(name)
            self.lines.append(self._metric_line(name))
        if isinstance(value, bool):
            value = int(value)
        data = {"time": _rfc3339(time.time_ns()), "value": value, "tags": tags or {}}
        self.lines.append(
            json.dumps(
                {"metric": name, "type": "Point", "data": data},
                separators=(",", ":"),
                default=str,
            )
        )
        if len(self.lines) >= 1024:
            self.flush()

    def _metric_line(self, name: str) -> str:
        metric = self.registry.metric(name)
        subs = [
            {
                "name": sub.name,
                "suffix": sub.name[len(name) + 1 : -1],
                "tags": dict(sub.tags),
            }
            for sub in self.registry.metrics()
            if sub.parent is metric
        ]
        data = {
            "name": name,
            "type": metric.kind,
            "contains": metric.contains,
            "thresholds": list(self.thresholds.get(name, [])),
            "submetrics": subs or None,
        }
        return json.dumps(
            {"type": "Metric", "data": data, "metric": name}, separators=(",", ":")
        )

    def flush(self) -> None:
        if self.lines:
            self.handle.write("\n".join(self.lines) + "\n")
            self.lines.clear()
        self.handle.flush()

    def close(self) -> None:
        """Write what is buffered; detach from the registry."""
        self.flush()
        if self.registry is not None:
            self.registry.__dict__.pop("add", None)
