"""k6's end-of-test summary: the text (k6 1.1.0's default "compact" layout), the data
handed to handleSummary() and the `--summary-export` JSON.

The layout rules follow k6 1.1.0's summary code and are checked against its output
(tests/load/test_summary.py): sections THRESHOLDS and TOTAL RESULTS, checks first, then
metrics grouped as k6 groups them (CUSTOM first, then HTTP, EXECUTION, NETWORK, ...),
names sorted the way k6's JavaScript `localeCompare` sorts them, dotted padding, and
numbers written the way JavaScript writes them.
"""

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from chaospika.loadengine.metrics import DEFAULT_TREND_STATS, Metric, trend_stat
from chaospika.loadengine.registry import Registry

__all__ = ["data", "export", "go_duration", "js_fixed", "js_number", "text"]

Results = Mapping[str, Mapping[str, bool]] | None

_SECTIONS = (
    "http",
    "execution",
    "network",
    "browser",
    "webvitals",
    "grpc",
    "websocket",
)
_SKIPPED_IN_COMPACT = [
    "checks",
    "group_duration",
    "http_req_blocked",
    "http_req_connecting",
    "http_req_receiving",
    "http_req_sending",
    "http_req_tls_handshaking",
    "http_req_waiting",
]
_HTTP = [
    "http_reqs",
    "http_req_failed",
    "http_req_duration",
    "http_req_blocked",
    "http_req_connecting",
    "http_req_tls_handshaking",
    "http_req_sending",
    "http_req_waiting",
    "http_req_receiving",
]
_EXECUTION = [
    "vus",
    "vus_max",
    "iterations",
    "iteration_duration",
    "dropped_iterations",
]
_NETWORK = ("data_sent", "data_received")
_PERCENTILE_SOURCE = re.compile(r"p\((\d+(?:\.\d+)?)\)\s*[<>=]")
_ANSI = re.compile(r"\x1b\[[0-9;]*[@-~]|\x1b[@-_]")
_PUNCTUATION = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"  # Unicode root collation order
_COLORS = {"green": "32", "red": "31", "cyan": "36", "white": "37"}


# -- JavaScript number formatting -------------------------------------------------------
def js_number(value: float) -> str:
    """Number.prototype.toString(): "5", "0.3", "1e-7", "1e+21"."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    if value < 0:
        return "-" + js_number(-value)
    _, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    size, point = len(digits), exponent + len(digits)
    if size <= point <= 21:
        return digits + "0" * (point - size)
    if 0 < point <= 21:
        return digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return "0." + "0" * -point + digits
    power = point - 1
    mantissa = digits[0] + ("." + digits[1:] if size > 1 else "")
    return f"{mantissa}e{'+' if power >= 0 else '-'}{abs(power)}"


def js_fixed(value: float, digits: int) -> str:
    """Number.prototype.toFixed(digits) (halves round away from zero)."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if abs(value) >= 1e21:
        return js_number(value)
    quantum = Decimal(1).scaleb(-digits)
    return f"{Decimal(value or 0.0).quantize(quantum, rounding=ROUND_HALF_UP):f}"


def _js_trunc(value: float) -> float:
    return value if not math.isfinite(value) else float(math.trunc(value))


def _fixed_no_zeros(value: float, digits: int) -> str:
    return js_number(float(js_fixed(value, digits)))


def _fixed_no_zeros_trunc(value: float, digits: int) -> str:
    scale = 10**digits
    return _fixed_no_zeros(_js_trunc(scale * value) / scale, digits)


def _humanize_bytes(size: float) -> str:
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    if size < 10:
        return js_number(size) + " B"
    power = math.floor(math.log(size) / math.log(1000))
    value = math.floor(size / 1000.0**power * 10 + 0.5) / 10
    return js_fixed(value, 1 if value < 10 else 0) + " " + units[power]


def _humanize_duration(ms: float, time_unit: str | None) -> str:
    units = {"s": ("s", 0.001), "ms": ("ms", 1.0), "us": ("µs", 1000.0)}
    if time_unit in units:
        unit, coefficient = units[time_unit]
        return js_fixed(ms * coefficient, 2) + unit
    if ms == 0:
        return "0s"
    if ms < 0.001:
        return js_number(_js_trunc(ms * 1_000_000)) + "ns"
    if ms < 1:
        return _fixed_no_zeros_trunc(ms * 1000, 2) + "µs"
    if ms < 1000:
        return _fixed_no_zeros_trunc(ms, 2) + "ms"
    seconds = math.fmod(ms, 60000) / 1000
    text = _fixed_no_zeros_trunc(seconds, 0 if ms > 60000 else 2) + "s"
    minutes = math.trunc(ms / 60000)
    if minutes < 1:
        return text
    text = f"{minutes % 60}m{text}"
    hours = math.trunc(minutes / 60)
    return text if hours < 1 else f"{hours}h{text}"


def _humanize(
    value: float | None, kind: str, contains: str, time_unit: str | None
) -> str:
    if value is None:
        return "undefined"
    if kind == "rate":
        return js_fixed(_js_trunc(value * 100 * 100) / 100, 2) + "%"
    if contains == "data":
        return _humanize_bytes(value)
    if contains == "time":
        return _humanize_duration(value, time_unit)
    return _fixed_no_zeros(value, 6)


# -- the report model -----------------------------------------------------------------
@dataclass
class _Item:
    """One metric as the summary shows it."""

    name: str
    kind: str
    contains: str
    values: dict


def _values(metric: Metric, duration: float, trend_stats: Iterable[str]) -> dict:
    if metric.kind == "trend":
        return {stat: metric.stat(stat) for stat in trend_stats}
    return metric.stats(duration)


def _observed(registry: Registry, results: Results) -> list[Metric]:
    """Metrics with samples or thresholds, as k6 lists them."""
    wanted = set(results or ())
    return [m for m in registry.metrics() if not m.empty or m.name in wanted]


def _collation_key(text: str) -> tuple:
    """Sort key close to the Unicode root collation k6's localeCompare uses."""
    primary, tertiary = [], []
    for char in text:
        if char in _PUNCTUATION:
            primary.append(_PUNCTUATION.index(char))
        elif char.isascii() and char.isdigit():
            primary.append(100 + int(char))
        elif char.isascii() and char.isalpha():
            primary.append(200 + ord(char.lower()))
        else:
            primary.append(1000 + ord(char))
        tertiary.append(char.isupper())
    return primary, tertiary, text


def _sort_names(names: Iterable[str]) -> list[str]:
    def key(name: str) -> tuple:
        parent = name.split("{", 1)[0]
        return _collation_key(parent), _collation_key(name[len(parent) :])

    return sorted(names, key=key)


def _section(name: str) -> str | None:
    """k6's summary section of a metric (by name prefix); None if not shown."""
    starts = name.startswith
    if any(starts(prefix) for prefix in _SKIPPED_IN_COMPACT):
        return None
    if any(starts(prefix) for prefix in _HTTP):
        return "http"
    if any(starts(prefix) for prefix in _EXECUTION):
        return "execution"
    if any(starts(prefix) for prefix in _NETWORK):
        return "network"
    if starts("browser_web_vital_"):
        return "webvitals"
    if starts("browser_"):
        return "browser"
    if starts("grpc_"):
        return "grpc"
    if starts("ws_"):
        return "websocket"
    return "custom"


def _rate_of(count: float, duration: float) -> float:
    return count / duration if duration else 0.0


@dataclass
class _Layout:
    """Rendered values and column widths of a block of metric lines."""

    name_width: int = 0
    value_width: int = 0
    extra_widths: list[int] = field(default_factory=list)
    trend_widths: list[int] = field(default_factory=list)
    trend_cols: dict[str, list[str]] = field(default_factory=dict)
    trend_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    main: dict[str, str] = field(default_factory=dict)
    extras: dict[str, list[str]] = field(default_factory=dict)


class _Renderer:
    """k6 1.1.0's text summary rendering (compact mode)."""

    def __init__(self, trend_stats: list[str], time_unit: str | None, colors: bool):
        self.trend_stats = trend_stats
        self.time_unit = time_unit
        self.colors = colors

    def decorate(self, text: str, color: str, *styles: str) -> str:
        if not self.colors:
            return text
        codes = [{"bold": "1", "faint": "2"}[s] for s in styles] + [_COLORS[color]]
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.colors else text

    def humanize(self, item: _Item, value: float | None) -> str:
        return _humanize(value, item.kind, item.contains, self.time_unit)

    def non_trend_values(self, item: _Item) -> list[str]:
        values = item.values
        if item.kind == "counter":
            return [
                self.humanize(item, values["count"]),
                self.humanize(item, values["rate"]) + "/s",
            ]
        if item.kind == "gauge":
            return [
                self.humanize(item, values["value"]),
                "min=" + self.humanize(item, values["min"]),
                "max=" + self.humanize(item, values["max"]),
            ]
        total = js_number(values["passes"] + values["fails"])
        return [
            self.humanize(item, values["rate"]),
            f"{js_number(values['passes'])} out of {total}",
        ]

    def trend_value(self, item: _Item, stat: str) -> str:
        value = item.values.get(stat)
        if stat == "count" and value is not None:
            return js_number(value)
        return self.humanize(item, value)

    def layout(self, items: list[_Item], indent: str) -> _Layout:
        """Rendered values and column widths (k6's computeSummaryInfo)."""
        layout = _Layout(trend_widths=[0] * len(self.trend_stats))
        for item in items:
            name_width = width(indent + item.name + _display(item.name))
            layout.name_width = max(layout.name_width, name_width)
            if item.kind == "trend":
                cols = [self.trend_value(item, stat) for stat in self.trend_stats]
                layout.trend_cols[item.name] = cols
                layout.trend_widths = [
                    max(size, width(col))
                    for size, col in zip(layout.trend_widths, cols)
                ]
                layout.trend_keys[item.name] = {
                    key: self.trend_value(item, key)
                    for key in item.values
                    if key not in self.trend_stats
                }
                continue
            main, *extras = self.non_trend_values(item)
            layout.main[item.name], layout.extras[item.name] = main, extras
            layout.value_width = max(layout.value_width, width(main))
            for index, extra in enumerate(extras):
                if index == len(layout.extra_widths):
                    layout.extra_widths.append(0)
                layout.extra_widths[index] = max(
                    layout.extra_widths[index], width(extra)
                )
        return layout

    def metric_line(self, item: _Item, info: _Layout, indent: str) -> str:
        shown = _display(item.name)
        dots = "." * (info.name_width - width(shown) - width(indent) + 3)
        name = shown + self.decorate(dots + ":", "white", "faint")
        if item.kind == "trend":
            parts = []
            for stat, col, size in zip(
                self.trend_stats, info.trend_cols[item.name], info.trend_widths
            ):
                padding = " " * (size - width(col))
                parts.append(stat + "=" + self.decorate(col, "cyan") + padding)
            data = " ".join(parts)
        else:
            main, extras = info.main[item.name], info.extras[item.name]
            data = self.decorate(main, "cyan") + " " * (info.value_width - width(main))
            if len(extras) == 1:
                data += " " + self.decorate(extras[0], "cyan", "faint")
            elif extras:
                data += " " + " ".join(
                    self.decorate(extra, "cyan", "faint")
                    + " " * (info.extra_widths[i] - width(extra))
                    for i, extra in enumerate(extras)
                )
        return indent + name + " " + data

    def threshold_value(self, item: _Item, source: str, info: _Layout) -> str:
        stat = re.split(r"[=><]", source)[0].strip()
        if item.kind == "trend":
            if stat in self.trend_stats:
                value = info.trend_cols[item.name][self.trend_stats.index(stat)]
            else:
                value = info.trend_keys[item.name].get(stat, "undefined")
        elif item.kind == "counter" and stat != "count":
            value = info.extras[item.name][0]
        else:
            value = info.main[item.name]
        return self.decorate(stat, "white") + "=" + self.decorate(value, "cyan")

    def thresholds(self, items: list[tuple[_Item, list]]) -> list[str]:
        indent = "    "
        info = self.layout([item for item, _ in items], indent)
        present = {item.name for item, _ in items}
        lines = []
        by_name = {item.name: (item, marks) for item, marks in items}
        for name in _sort_names(by_name):
            item, marks = by_name[name]
            parent = name.split("{", 1)[0]
            nested = parent != name and parent in present
            inner = indent + "  " if nested else indent
            lines.append(inner + (name[len(parent) :] if nested else name))
            for source, passed in marks:
                mark = (
                    self.decorate("✓", "green") if passed else self.decorate("✗", "red")
                )
                quoted = self.decorate(f"'{source.strip()}'", "white")
                lines.append(
                    inner
                    + " ".join([mark, quoted, self.threshold_value(item, source, info)])
                )
            lines.append("\n")
        return lines

    def checks(self, checks: list[_Item], ordered: list[tuple[str, int, int]]) -> list:
        indent = "    "
        info = self.layout(checks, indent)
        lines = [self.metric_line(item, info, indent) for item in checks]
        lines.append("\n")
        for name, passes, fails in ordered:
            if not fails:
                lines.append(indent + self.decorate("✓ " + name, "green"))
                continue
            percent = math.floor(100 * passes / (passes + fails))
            detail = f"↳  {percent}% — ✓ {passes} / ✗ {fails}"
            lines.append(
                indent
                + self.decorate("✗ " + name, "red")
                + "\n"
                + indent
                + "  "
                + self.decorate(detail, "red")
            )
        return [*lines, "\n"]

    def metrics(self, sections: dict[str, list[_Item]]) -> list[str]:
        indent = "    "
        everything = [item for items in sections.values() for item in items]
        info = self.layout(everything, indent)
        lines = []
        for section in ("custom", *_SECTIONS):
            items = sections.get(section)
            if not items:
                continue
            lines.append(indent + self.bold(section.upper()))
            by_name = {item.name: item for item in items}
            lines += [
                self.metric_line(by_name[n], info, indent) for n in _sort_names(by_name)
            ]
            lines.append("\n")
        return lines


def width(text: str) -> int:
    """Characters a terminal shows (k6's strWidth: NFKC, ANSI codes skipped)."""
    return len(unicodedata.normalize("NFKC", _ANSI.sub("", text)))


def _display(name: str) -> str:
    """How a metric line names a metric: sub-metrics as "  { tag:value }"."""
    brace = name.find("{")
    return name if brace < 0 else "  { " + name[brace + 1 : -1] + " }"


def _threshold_item(
    metric: Metric, duration: float, trend_stats: list[str], sources: Iterable[str]
) -> _Item:
    values = _values(metric, duration, trend_stats)
    if metric.kind == "trend":
        for source in sources:
            match = _PERCENTILE_SOURCE.match(source.strip())
            if match:
                values[f"p({match.group(1)})"] = metric.percentile(
                    float(match.group(1)) / 100
                )
    return _Item(metric.name, metric.kind, metric.contains, values)


def _checks_report(registry: Registry, duration: float) -> tuple[list[_Item], list]:
    checks = registry.metric("checks")
    total, success = checks.samples, checks.passes
    failed_rate = (total - success) / total if total else math.nan
    items = [
        _Item(
            "checks_total",
            "counter",
            "default",
            {"count": total, "rate": _rate_of(total, duration)},
        ),
        _Item("checks_succeeded", "rate", "default", checks.stats(duration)),
        _Item(
            "checks_failed",
            "rate",
            "default",
            {"rate": failed_rate, "passes": total - success, "fails": success},
        ),
    ]
    ordered: dict[str, list[int]] = {}
    for (_, name), (passes, fails) in registry.checks.items():
        tally = ordered.setdefault(name, [0, 0])
        tally[0] += passes
        tally[1] += fails
    return items, [(name, p, f) for name, (p, f) in ordered.items()]


def _settings(registry: Registry, duration_s: float | None, trend_stats) -> tuple:
    registry.fold()
    stats = list(trend_stats or DEFAULT_TREND_STATS)
    for stat in stats:
        trend_stat(stat)
    return (registry.elapsed if duration_s is None else duration_s), stats


def _scenarios_header(info: Mapping) -> str:
    scenarios = info.get("scenarios") or {}
    count = len(scenarios)
    parts = [f"{count} scenario{'s' if count != 1 else ''}"]
    if info.get("max_vus") is not None:
        parts.append(f"{info['max_vus']} max VUs")
    if info.get("max_duration_s") is not None:
        parts.append(f"{go_duration(info['max_duration_s'])} max duration")
        parts[-1] += " (incl. graceful stop)"
    lines = [f"     scenarios: (100.00%) {', '.join(parts)}:"]
    lines += [f"              * {name}: {text}" for name, text in scenarios.items()]
    return "\n".join(lines) + "\n\n"


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String(): "10m30s", "1h0m0s", "1.5s", "250ms"."""
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    sign, nanos = ("-" if nanos < 0 else ""), abs(nanos)
    if nanos < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanos >= size:
                return sign + _decimal(nanos, size) + unit
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _decimal(rest, 1_000_000_000) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = str(fraction).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


# -- public API -------------------------------------------------------------------------
def text(
    registry: Registry,
    thresholds_result: Results = None,
    duration_s: float | None = None,
    scenarios_info: Mapping | None = None,
    *,
    trend_stats: Iterable[str] | None = None,
    time_unit: str | None = None,
    colors: bool = False,
) -> str:
    """k6's end-of-test summary text.

    thresholds_result: ThresholdSet.final()'s {metric: {expression: passed}};
    duration_s: test duration for counter rates (default: registry.elapsed);
    scenarios_info: optional {"scenarios": {name: description}, "max_vus": N,
    "max_duration_s": S} rendered first as k6's "scenarios:" header;
    time_unit: k6's summaryTimeUnit ("s", "ms", "us"); colors: ANSI colours.
    """
    duration, stats = _settings(registry, duration_s, trend_stats)
    renderer = _Renderer(stats, time_unit, colors)
    sections: list[tuple[str, list[str]]] = []
    if thresholds_result:
        items = [
            (
                _threshold_item(registry.metric(key), duration, stats, marks),
                list(marks.items()),
            )
            for key, marks in thresholds_result.items()
        ]
        sections.append(("THRESHOLDS", renderer.thresholds(items)))
    content: list[str] = []
    observed = _observed(registry, thresholds_result)
    if any(metric.name == "checks" for metric in observed):
        content += renderer.checks(*_checks_report(registry, duration))
    grouped: dict[str, list[_Item]] = {}
    for metric in observed:
        section = _section(metric.name)
        if section:
            values = _values(metric, duration, stats)
            item = _Item(metric.name, metric.kind, metric.contains, values)
            grouped.setdefault(section, []).append(item)
    content += renderer.metrics(grouped)
    sections.append(("TOTAL RESULTS", content))
    rendered = ""
    for title, lines in sections:
        for line in ["  █ " + renderer.bold(title) + " \n", *lines, "\n"]:
            rendered += line if line == "\n" else "\n" + line
    header = _scenarios_header(scenarios_info) if scenarios_info else ""
    return header + rendered


def _json_number(value: float) -> float | int | None:
    """A number as JSON.stringify writes it (integral values without ".0", NaN null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if not math.isfinite(value):
        return None
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _group(registry: Registry, path: str, name: str) -> dict:
    children = [
        child
        for child in registry.groups
        if child.rsplit("::", 1)[0] == path and child != path
    ]
    checks = [
        {
            "name": check,
            "path": f"{path}::{check}",
            "id": _md5(f"{path}::{check}"),
            "passes": passes,
            "fails": fails,
        }
        for (group, check), (passes, fails) in registry.checks.items()
        if group == path
    ]
    return {
        "name": name,
        "path": path,
        "id": _md5(path),
        "groups": [
            _group(registry, child, child.rsplit("::", 1)[1]) for child in children
        ],
        "checks": checks,
    }


def data(
    registry: Registry,
    thresholds_result: Results = None,
    duration_s: float | None = None,
    *,
    trend_stats: Iterable[str] | None = None,
    time_unit: str | None = None,
) -> dict:
    """The object k6 hands to handleSummary(): root_group, options, state, metrics."""
    duration, stats = _settings(registry, duration_s, trend_stats)
    metrics = {}
    for metric in _observed(registry, thresholds_result):
        values = {
            k: _json_number(v) for k, v in _values(metric, duration, stats).items()
        }
        entry = {"type": metric.kind, "contains": metric.contains, "values": values}
        marks = (thresholds_result or {}).get(metric.name)
        if marks:
            entry["thresholds"] = {source: {"ok": ok} for source, ok in marks.items()}
        metrics[metric.name] = entry
    return {
        "root_group": _group(registry, "", ""),
        "options": {
            "summaryTrendStats": stats,
            "summaryTimeUnit": time_unit or "",
            "noColor": True,
        },
        "state": {
            "isStdOutTTY": False,
            "isStdErrTTY": False,
            "testRunDurationMs": duration * 1000,
        },
        "metrics": metrics,
    }


def _keyed(group: dict) -> dict:
    return {
        **group,
        "groups": {g["name"]: _keyed(g) for g in group["groups"]},
        "checks": {c["name"]: c for c in group["checks"]},
    }


def export(
    registry: Registry,
    thresholds_result: Results = None,
    duration_s: float | None = None,
    *,
    trend_stats: Iterable[str] | None = None,
) -> dict:
    """k6's `--summary-export` JSON: metrics (thresholds map to *failed*) and root_group."""
    summary = data(registry, thresholds_result, duration_s, trend_stats=trend_stats)
    metrics = {}
    for name, entry in summary["metrics"].items():
        values = dict(entry["values"])
        if "thresholds" in entry:
            values["thresholds"] = {
                s: not t["ok"] for s, t in entry["thresholds"].items()
            }
        if entry["type"] == "rate" and "rate" in values:
            values["value"] = values.pop("rate")
        metrics[name] = values
    return {"root_group": _keyed(summary["root_group"]), "metrics": metrics}
