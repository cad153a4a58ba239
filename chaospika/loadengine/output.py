"""`--out json=FILE` and `--out csv=FILE`: every sample in k6's formats.

k6 1.1.0 writes, for each metric the first time a sample of it is seen, a line

    {"type":"Metric","data":{"name":..,"type":..,"contains":..,"thresholds":[..],
     "submetrics":[{"name":..,"suffix":..,"tags":{..}}] or null},"metric":..}

then one line per sample:

    {"metric":..,"type":"Point","data":{"time":"2026-..T..Z","value":..,"tags":{..}}}

with the time in Go's RFC3339Nano (no trailing zeros) and integral values
written as integers (`10`, not `10.0`), as Go encodes k6's float64 values.

`--out csv=FILE` writes k6's CSV: the header `metric_name,timestamp,metric_value,
check,...,url,extra_tags,metadata`, then one row per sample (unix seconds, the
value with six decimals, k6's tag columns, other tags as `a=1&b=2`).

`attach(registry)` (either output) makes the registry copy every sample it
records to the file (an instance attribute shadows `Registry.add`, so a run
without --out pays nothing). Lines are buffered and written by the recording
thread; `close()` flushes. A run with `processes` > 1 records in its worker
processes and cannot be written this way (the CLI says so: exit 104).
"""

import csv
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from chaospika.loadengine.registry import Registry

__all__ = ["CSV_COLUMNS", "CsvOutput", "JsonLinesOutput", "open_output", "parse_out"]

FORMATS = ("json", "csv")
CSV_TAGS = (
    "check", "error", "error_code", "expected_response", "group", "method", "name",
    "proto", "scenario", "service", "status", "subproto", "tls_version", "url",
)  # fmt: skip
CSV_COLUMNS = (
    "metric_name", "timestamp", "metric_value", *CSV_TAGS, "extra_tags", "metadata"
)  # fmt: skip


def parse_out(value: str) -> tuple[str, str]:
    """`json=FILE` -> ("json", FILE); ValueError naming what is expected."""
    kind, sep, path = value.partition("=")
    if kind not in FORMATS or not sep or not path:
        raise ValueError(
            f"--out {value!r}: expected json=FILE (k6's JSON lines) or csv=FILE "
            "(k6's CSV), e.g. json=out.jsonl"
        )
    return kind, path


def open_output(
    kind: str, path: str, thresholds: Mapping[str, list[str]]
) -> "JsonLinesOutput | CsvOutput":
    """The output of `--out kind=path` writing to a new file."""
    handle = open(path, "w", newline="" if kind == "csv" else None)  # noqa: SIM115
    if kind == "csv":
        return CsvOutput(handle)
    return JsonLinesOutput(handle, dict(thresholds))


def _rfc3339(ns: int) -> str:
    """Go's RFC3339Nano, as k6 writes it: no trailing zeros in the fraction."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if not fraction:
        return f"{stamp}Z"
    return f"{stamp}.{f'{fraction:09d}'.rstrip('0')}Z"


def _json_number(value: Any) -> Any:
    """A value as Go's encoder writes a float64: 10.0 is 10 (below 1e21)."""
    if isinstance(value, bool):
        return int(value)
    if type(value) is float and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


class JsonLinesOutput:
    """Writes the samples of one registry to a file as k6's JSON lines."""

    def __init__(self, handle: TextIO, thresholds: dict[str, list[str]]) -> None:
        self.handle = handle
        self.thresholds = thresholds  # {metric or sub-metric name: [sources]}
        self.seen: set[str] = set()
        self.registry: Registry | None = None
        self._previous: Callable | None = None
        self.lines: list[str] = []

    def attach(self, registry: Registry) -> None:
        """Copy every sample `registry` records to the file from now on."""
        self.registry = registry
        self._previous = registry.__dict__.get("add")  # another output's, if any
        recorded: Callable[[str, Any, dict | None], None] = registry.add
        write = self.point

        def add(name: str, value: Any, tags: dict | None = None) -> None:
            recorded(name, value, tags)
            write(name, value, tags)

        registry.add = add  # type: ignore[method-assign]

    def point(self, name: str, value: Any, tags: dict | None) -> None:
        if name not in self.seen:
            self.seen.add(name)
            self.lines.append(self._metric_line(name))
        value = _json_number(value)
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
        """Write what is buffered; detach from the registry; close the file."""
        self.flush()
        if self.registry is not None:
            if self._previous is None:
                self.registry.__dict__.pop("add", None)
            else:
                self.registry.add = self._previous  # type: ignore[method-assign]
        self.handle.close()


class CsvOutput(JsonLinesOutput):
    """Writes the samples of one registry to a file as k6's CSV."""

    def __init__(self, handle: TextIO) -> None:
        super().__init__(handle, {})
        self.writer = csv.writer(handle, lineterminator="\n")
        self.writer.writerow(CSV_COLUMNS)
        self.rows: list[list[str]] = []

    def point(self, name: str, value: Any, tags: dict | None) -> None:
        tags = tags or {}
        extra = "&".join(
            f"{key}={tags[key]}" for key in sorted(tags) if key not in CSV_TAGS
        )
        self.rows.append(
            [
                name,
                str(int(time.time())),
                f"{float(value):f}",
                *(str(tags.get(key, "")) for key in CSV_TAGS),
                extra,
                "",
            ]
        )
        if len(self.rows) >= 1024:
            self.flush()

    def flush(self) -> None:
        self.writer.writerows(self.rows)
        self.rows.clear()
        self.handle.flush()
