"""Inline SVG charts for the HTML report: no library, nothing fetched.

`line_chart` draws series over time with the fault windows shaded;
`timeline` draws one bar per activity on the same kind of time axis. Both take
epoch seconds and label the axis in seconds since `x0` (the experiment start).
"""

import math
from collections.abc import Sequence
from html import escape

__all__ = ["COLORS", "Window", "line_chart", "nice_ticks", "timeline"]

COLORS = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457")
FAULT_FILL = "#d32f2f"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif"
PHASE_COLORS = {
    "before": "#546e7a",
    "method": "#1565c0",
    "after": "#546e7a",
    "rollback": "#6a1b9a",
}
STATUS_FAILED = "#c62828"

Window = tuple[float, float, str]  # start, end (epoch seconds), label


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (about `count` of them)."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks, value = [], first
    while len(ticks) < 50:
        ticks.append(round(value, 10))
        if value >= high - step * 1e-9:
            break
        value += step
    return ticks


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


class _Frame:
    """Plot area and the scales of one chart."""

    def __init__(self, width, height, left, right, top, bottom, x0, x1, y0, y1):
        self.width, self.height = width, height
        self.left, self.top = left, top
        self.plot_w = width - left - right
        self.plot_h = height - top - bottom
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1

    def x(self, value: float) -> float:
        share = (value - self.x0) / (self.x1 - self.x0)
        return round(self.left + min(1.0, max(0.0, share)) * self.plot_w, 2)

    def y(self, value: float) -> float:
        share = (value - self.y0) / (self.y1 - self.y0)
        return round(
            self.top + self.plot_h - min(1.0, max(0.0, share)) * self.plot_h, 2
        )

    @property
    def bottom_y(self) -> float:
        return self.top + self.plot_h


def _x_axis(frame: _Frame, parts: list[str], origin: float) -> None:
    """Ticks labelled in seconds since `origin`, inside the frame's time range."""
    count = max(2, int(frame.plot_w // 90))
    for tick in nice_ticks(frame.x0 - origin, frame.x1 - origin, count):
        if not frame.x0 - 1e-6 <= origin + tick <= frame.x1 + 1e-6:
            continue
        x = frame.x(origin + tick)
        parts.append(
            f'<line x1="{x}" y1="{frame.top}" x2="{x}" y2="{frame.bottom_y}" '
            'stroke="#e0e0e0" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{x}" y="{frame.bottom_y + 16}" text-anchor="middle" '
            f'font-size="11" fill="#555">{_label(tick)} s</text>'
        )
    parts.append(
        f'<line x1="{frame.left}" y1="{frame.bottom_y}" x2="{frame.left + frame.plot_w}" '
        f'y2="{frame.bottom_y}" stroke="#9e9e9e" stroke-width="1"/>'
    )


def _windows(frame: _Frame, windows: Sequence[Window], parts: list[str]) -> None:
    for index, (start, end, label) in enumerate(windows):
        x_a, x_b = frame.x(start), frame.x(end)
        width = max(2.0, round(x_b - x_a, 2))
        parts.append(
            f'<rect class="fault-window" x="{x_a}" y="{frame.top}" width="{width}" '
            f'height="{frame.plot_h}" fill="{FAULT_FILL}" fill-opacity="0.13" '
            f'stroke="{FAULT_FILL}" stroke-opacity="0.5" stroke-dasharray="3 3">'
            f"<title>{escape(label)}: {start - frame.x0:.2f} s to "
            f"{end - frame.x0:.2f} s</title></rect>"
        )
        parts.append(
            f'<text x="{x_a + 4}" y="{frame.top + 12 + 12 * (index % 3)}" '
            f'font-size="11" fill="{FAULT_FILL}">{escape(label)}</text>'
        )


def line_chart(
    key: str,
    title: str,
    unit: str,
    lines: Sequence[tuple[str, Sequence[tuple[float, float | None]]]],
    x0: float,
    x1: float,
    windows: Sequence[Window] = (),
    origin: float | None = None,
    width: int = 960,
    height: int = 230,
) -> str:
    """An SVG line chart; `lines` are (label, [(epoch x, y or None for a gap)]).

    The x axis spans `x0`..`x1` and is labelled in seconds since `origin` (`x0`).
    """
    values = [y for _, points in lines for _, y in points if y is not None]
    top = max(values) if values else 0.0
    y_ticks = nice_ticks(0.0, top * 1.08 if top > 0 else 1.0, 4)
    frame = _Frame(width, height, 64, 16, 30, 30, x0, x1, 0.0, y_ticks[-1])
    opening = (
        f'<svg class="chart" data-chart="{escape(key)}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'data-x0="{frame.x0}" data-x1="{frame.x1}" data-left="{frame.left}" '
        f'data-plot-width="{frame.plot_w}" '
        f'role="img" aria-label="{escape(title)}" style="{FONT}">'
    )
    heading = (
        f'<text x="{frame.left}" y="18" font-size="14" font-weight="600" '
        f'fill="#222">{escape(title)}</text>'
    )
    parts = [opening, heading]
    for tick in y_ticks:
        y = frame.y(tick)
        parts.append(
            f'<line x1="{frame.left}" y1="{y}" x2="{frame.left + frame.plot_w}" y2="{y}" '
            'stroke="#eeeeee" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{frame.left - 6}" y="{y + 4}" text-anchor="end" font-size="11" '
            f'fill="#555">{_label(tick)}</text>'
        )
    parts.append(
        f'<text x="14" y="{frame.top + frame.plot_h / 2}" font-size="11" fill="#555" '
        f'text-anchor="middle" transform="rotate(-90 14 {frame.top + frame.plot_h / 2})">'
        f"{escape(unit)}</text>"
    )
    _x_axis(frame, parts, x0 if origin is None else origin)
    _windows(frame, windows, parts)
    legend_x = frame.left + frame.plot_w
    for index, (label, points) in enumerate(lines):
        color = COLORS[index % len(COLORS)]
        path, dots, run = [], [], []
        for x, y in list(points) + [(None, None)]:
            if y is None or x is None:
                if len(run) == 1:
                    dots.append(run[0])
                if len(run) > 1:
                    path.append("M" + " L".join(f"{a},{b}" for a, b in run))
                run = []
                continue
            run.append((frame.x(x), frame.y(y)))
        if path:
            parts.append(
                f'<path class="series" data-series="{escape(label)}" d="{" ".join(path)}" '
                f'fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round"/>'
            )
        for a, b in dots:
            parts.append(
                f'<circle class="series" data-series="{escape(label)}" cx="{a}" cy="{b}" '
                f'r="2.5" fill="{color}"/>'
            )
        if len(lines) > 1 or label:
            parts.append(
                f'<text x="{legend_x}" y="18" text-anchor="end" font-size="12" '
                f'fill="{color}">{escape(label)}</text>'
            )
            legend_x -= 10 + 7 * len(label)
    parts.append("</svg>")
    return "\n".join(parts)


def timeline(
    rows: Sequence[dict],
    x0: float,
    x1: float,
    windows: Sequence[Window] = (),
    width: int = 960,
) -> str:
    """One bar per activity (dicts with phase, name, start, end, status, background)."""
    row_h, label_w = 18, 290
    height = 40 + row_h * len(rows) + 24
    frame = _Frame(width, height, label_w, 16, 30, 24, x0, x1, 0.0, 1.0)
    opening = (
        f'<svg class="chart timeline" data-chart="timeline" '
        f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" '
        f'aria-label="Timeline of every activity" style="{FONT}">'
    )
    heading = (
        '<text x="8" y="18" font-size="14" font-weight="600" fill="#222">'
        "Timeline of every activity</text>"
    )
    parts = [opening, heading]
    _x_axis(frame, parts, x0)
    _windows(frame, windows, parts)
    for index, row in enumerate(rows):
        y = frame.top + 6 + index * row_h
        failed = (
            row["status"] not in ("succeeded", "") or row.get("tolerance_met") is False
        )
        color = STATUS_FAILED if failed else PHASE_COLORS.get(row["phase"], "#546e7a")
        name = row["name"] if len(row["name"]) <= 40 else row["name"][:39] + "…"
        parts.append(
            f'<text x="8" y="{y + 12}" font-size="11" fill="#333">'
            f'<tspan fill="{PHASE_COLORS.get(row["phase"], "#546e7a")}">'
            f"{escape(row['phase'])}</tspan> {escape(name)}</text>"
        )
        if row["start"] is None:
            continue
        x_a, x_b = frame.x(row["start"]), frame.x(row["end"] or row["start"])
        bar_w = max(2.0, round(x_b - x_a, 2))
        opacity = "0.55" if row.get("background") else "0.9"
        parts.append(
            f'<rect class="activity" x="{x_a}" y="{y + 2}" width="{bar_w}" '
            f'height="{row_h - 5}" rx="2" fill="{color}" fill-opacity="{opacity}">'
            f"<title>{escape(row['phase'])} {escape(row['name'])}: {escape(row['status'])}, "
            f"{row['start'] - x0:.2f} s to {(row['end'] or row['start']) - x0:.2f} s"
            f"</title></rect>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
