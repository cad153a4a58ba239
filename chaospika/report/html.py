"""The HTML report of one journal: a single self-contained file.

Everything is inline: CSS in a <style>, charts as SVG, no script. A
Content-Security-Policy ``default-src 'none'`` forbids any fetch, so the page
looks the same offline and a browser makes no request to show it.
"""

from datetime import UTC, datetime
from html import escape
from typing import Any

from chaospika import __version__
from chaospika.report import svg
from chaospika.report.facts import ID_KINDS, facts

__all__ = ["CSP", "render_html"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
SHOWN_IDS = 200
CHARTS = (
    ("rps", "Request rate", "requests / s"),
    ("p95_ms", "Request duration p95", "ms"),
    ("error_pct", "Error rate (failed requests)", "%"),
    ("ws_p95_ms", "WebSocket message latency p95", "ms"),
)
NO_DATA = {
    "ws_p95_ms": (
        "No WebSocket message latency in this run (no ws_msg_latency samples in a load, "
        "no chaospika.ws probe)."
    ),
}
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;
 color:#222;margin:0;background:#fafafa}
main{max-width:1000px;margin:0 auto;padding:16px 20px 40px;background:#fff}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:28px 0 8px;
 border-bottom:1px solid #e0e0e0;padding-bottom:4px}
.badge{display:inline-block;padding:4px 10px;border-radius:4px;color:#fff;font-weight:700;
 letter-spacing:.02em}
.pass{background:#2e7d32}.fail{background:#c62828}.warn{background:#ef6c00}
.muted{color:#666}.small{font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}
.card{border:1px solid #e0e0e0;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:18px}.card span{font-size:12px;color:#666}
.card.bad{border-color:#c62828;background:#fff5f5}
table{border-collapse:collapse;width:100%;margin:6px 0;font-size:13px}
th,td{border:1px solid #e0e0e0;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;white-space:nowrap}
td.ok{color:#2e7d32;font-weight:600}td.bad{color:#c62828;font-weight:600}
code,.mono{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:12px;
 word-break:break-all}
figure{margin:10px 0}svg.chart{max-width:100%;height:auto;display:block}
.nodata{border:1px dashed #bdbdbd;color:#666;padding:18px;margin:10px 0;border-radius:4px}
ul.reasons{margin:6px 0 0 18px;padding:0}
"""


def _seconds(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f} s"


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and digits:
        return f"{value:.{digits}f}"
    return f"{value:.0f}" if isinstance(value, float) else str(value)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "–"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _offset(epoch: float | None, start: float | None) -> str:
    if epoch is None or start is None:
        return "–"
    return f"+{epoch - start:.2f} s"


def _header(found: dict) -> str:
    verdict = found["verdict"]
    kind = "pass" if verdict.code == 0 else "fail"
    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in verdict.reasons)
    return (
        f"<h1>{escape(found['title'] or 'Chaos experiment')}</h1>"
        f'<p><span id="verdict" class="badge {kind}" data-code="{verdict.code}">'
        f"{escape(verdict.outcome.upper())} · exit {verdict.code}</span> "
        f'<span class="muted">chaos status: {escape(str(found["status"]))}, '
        f"deviated: {escape(str(found['deviated']))} · started {_when(found['start'])} · "
        f"lasted {_seconds(found['duration_seconds'], 1)}</span></p>"
        + (f'<ul class="reasons">{reasons}</ul>' if reasons else "")
        + (
            f'<p class="muted small">{escape(found["description"])}</p>'
            if found["description"]
            else ""
        )
    )


def _cards(found: dict) -> str:
    ids = found["ids"]
    cards = [
        (
            "recovery time",
            _seconds(found["recovery"]["seconds"]),
            found["recovery"]["source"],
            False,
        ),
        (
            "max downtime",
            _seconds(found["max_downtime"]["seconds"]),
            found["max_downtime"]["source"],
            bool(found["max_downtime"]["seconds"]),
        ),
        ("requests", _number(found["requests_count"]), "first load", False),
        (
            "failed requests",
            _number(found["failed_count"]),
            "first load",
            bool(found["failed_count"]),
        ),
        ("p95 latency", f"{_number(found['p95_ms'], 1)} ms", "first load", False),
    ]
    for kind in ID_KINDS:
        count = ids.get(f"{kind}_count")
        cards.append(
            (
                f"{kind} ids",
                _number(count),
                ids.get("probe", "no consistency probe"),
                bool(count),
            )
        )
    return (
        '<div class="cards" id="figures">'
        + "".join(
            f'<div class="card{" bad" if bad else ""}" data-figure="{escape(name)}">'
            f"<span>{escape(name)}</span><b>{escape(value)}</b>"
            f'<span title="{escape(source)}">{escape(source[:40])}</span></div>'
            for name, value, source, bad in cards
        )
        + "</div>"
    )


def _windows(found: dict) -> list[svg.Window]:
    return [
        (
            fault["start"],
            fault["end"],
            f"{fault['kind']} · {fault['target'].rsplit('/', 1)[-1]}",
        )
        for fault in found["faults"]
    ]


def _websocket_line(found: dict) -> list[tuple[float, float | None]]:
    """Each WebSocket probe run as a flat segment at its p95, from its start to its end."""
    points: list[tuple[float, float | None]] = []
    for run in found["websocket"]:
        points += [(run["start"], run["p95_ms"]), (run["end"], run["p95_ms"])]
        points.append((run["end"], None))  # a gap before the next run
    return points


def _charts(found: dict) -> str:
    start, end = found["start"], found["end"]
    loads = [load for load in found["loads"] if load["series"]]
    websocket = _websocket_line(found)
    parts = ["<h2>Load over time</h2>"]
    if found["loads"] and not loads:
        parts.append(
            '<p class="nodata" id="no-series">This journal has no per-second load series '
            "(`pika_series`): run the experiment with <code>chaospika run</code>, or declare "
            "the control <code>chaospika.report.control</code> in it.</p>"
        )
    if not loads and not websocket:
        if not found["loads"]:
            parts.append(
                '<p class="nodata" id="no-series">This experiment ran no load.</p>'
            )
        return "".join(parts)
    if found["faults"]:
        parts.append(
            '<p class="muted small">Shaded: each fault from when it was applied to when it '
            "was undone (the safety control's ledger records).</p>"
        )
    xs = [x for load in loads for line in load["series"].values() for x, _ in line]
    xs += [x for x, _ in websocket]
    xs += [t for fault in found["faults"] for t in (fault["start"], fault["end"])]
    # the charts show the loads and the faults, a second of margin each side
    x0, x1 = min(xs) - 1.0, max(xs) + 1.0
    if start is not None:
        x0 = max(x0, start)
    if end is not None:
        x1 = min(x1, end)
    origin = start if start is not None else x0
    parts.append(
        f'<p class="muted small">Time axis: seconds since the experiment started '
        f"({escape(_when(origin))}); loads: one point per second; WebSocket probes: "
        "each run's p95 from its start to its end.</p>"
    )
    for key, title, unit in CHARTS:
        lines = [
            (load["name"], load["series"].get(key) or [])
            for load in loads
            if any(y is not None for _, y in load["series"].get(key) or [])
        ]
        if key == "ws_p95_ms" and websocket:
            lines.append(("WebSocket probes", websocket))
        if not lines:
            note = NO_DATA.get(key, f"No data for {title.lower()} in this run.")
            parts.append(f'<p class="nodata" data-chart="{key}">{escape(note)}</p>')
            continue
        parts.append(
            "<figure>"
            + svg.line_chart(key, title, unit, lines, x0, x1, _windows(found), origin)
            + "</figure>"
        )
    return "".join(parts)


def _timeline(found: dict) -> str:
    rows = found["activities"]
    if not rows:
        return "<h2>Timeline</h2><p class='nodata'>No activity ran.</p>"
    start = found["start"] or min(r["start"] for r in rows if r["start"] is not None)
    end = found["end"] or max(r["end"] for r in rows if r["end"] is not None)
    table = [
        (
            "<table id='activities'><tr><th>phase</th><th>activity</th><th>start</th>"
            "<th>duration</th><th>status</th><th>output</th></tr>"
        )
    ]
    for row in rows:
        failed = row["status"] != "succeeded" or row["tolerance_met"] is False
        status = row["status"] + (
            ""
            if row["tolerance_met"] is None
            else f", tolerance met: {row['tolerance_met']}"
        )
        duration = (
            None
            if row["start"] is None or row["end"] is None
            else row["end"] - row["start"]
        )
        table.append(
            f"<tr><td>{escape(row['phase'])}</td><td>{escape(row['name'])}"
            f"{' <span class=muted>(background)</span>' if row['background'] else ''}"
            f"<br><span class='muted small'>{escape(row['type'])}</span></td>"
            f"<td class='num'>{_offset(row['start'], start)}</td>"
            f"<td class='num'>{_seconds(duration)}</td>"
            f"<td class='{'bad' if failed else 'ok'}'>{escape(status)}</td>"
            f"<td><code>{escape(row['brief'][:300])}</code></td></tr>"
        )
    table.append("</table>")
    return (
        "<h2>Timeline</h2><figure>"
        + svg.timeline(rows, start, end, _windows(found))
        + "</figure>"
        + "".join(table)
    )


def _steady_state(found: dict) -> str:
    rows = found["steady_state"]
    if not rows:
        return "<h2>Steady state</h2><p class='nodata'>No steady-state hypothesis.</p>"
    html = [
        (
            "<h2>Steady state before / after</h2><table id='steady-state'>"
            "<tr><th>probe</th><th>before the method</th><th>after the method</th></tr>"
        )
    ]
    for row in rows:
        cells = []
        for phase in ("before", "after"):
            result = row[phase]
            if result is None:
                cells.append("<td class='muted'>not run</td>")
                continue
            mark = "met" if result["met"] else f"NOT met ({result['status']})"
            cells.append(
                f"<td class='{'ok' if result['met'] else 'bad'}'>{escape(mark)}<br>"
                f"<code>{escape(result['brief'][:300])}</code></td>"
            )
        html.append(f"<tr><td>{escape(row['name'])}</td>{''.join(cells)}</tr>")
    html.append("</table>")
    return "".join(html)


def _recovery(found: dict) -> str:
    parts = ["<h2>Faults and recovery</h2>"]
    faults = found["faults"]
    if not faults:
        parts.append(
            "<p class='muted'>No fault records in the journal (`pika_faults` is written by "
            "the safety control <code>chaospika.controls.safety</code>).</p>"
        )
    else:
        per_fault = {row["fault"]: row for row in found["per_fault"]}
        parts.append(
            "<table id='faults'><tr><th>fault</th><th>target</th><th>applied</th>"
            "<th>undone</th><th>in force</th><th>requests failing for</th><th>state</th></tr>"
        )
        for fault in faults:
            row = per_fault.get(fault["id"], {})
            failing = row.get("errors_for_seconds")
            parts.append(
                f"<tr><td>{escape(fault['kind'])}<br><span class='muted small'>"
                f"{escape(fault['id'])}</span></td><td><code>{escape(fault['target'])}</code></td>"
                f"<td class='num'>{_offset(fault['start'], found['start'])}</td>"
                f"<td class='num'>{_offset(fault['end'], found['start']) if fault['undone'] else 'never'}"
                f"{'<br>by ' + escape(str(fault['undone_by'])) if fault['undone_by'] else ''}</td>"
                f"<td class='num'>{_seconds(row.get('in_force_seconds'))}</td>"
                f"<td class='num'>{'no failure' if failing is None else _seconds(failing)}</td>"
                f"<td>{escape(fault['state'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<p class='small muted'>Recovery time: "
        f"{_seconds(found['recovery']['seconds'])} ({escape(found['recovery']['source'])}). "
        f"Max downtime: {_seconds(found['max_downtime']['seconds'])} "
        f"({escape(found['max_downtime']['source'])}): the longest span from a second in "
        "which every request failed to the next success.</p>"
    )
    return "".join(parts)


def _ids(found: dict) -> str:
    ids = found["ids"]
    parts = ["<h2>Lost, stuck, duplicated and oversold ids</h2>"]
    if not ids:
        parts.append("<p class='muted'>No consistency probe in this journal.</p>")
        return "".join(parts)
    parts.append(
        f"<p class='muted small'>From the probe {escape(str(ids['probe']))} "
        f"({escape(ids['phase'])}); consistent: {escape(str(ids['consistent']))}; "
        f"acknowledged: {escape(str(ids.get('acknowledged_count')))}.</p>"
    )
    if ids["violations"]:
        parts.append(
            "<ul class='reasons'>"
            + "".join(f"<li>{escape(str(v))}</li>" for v in ids["violations"])
            + "</ul>"
        )
    parts.append("<table id='ids'><tr><th>kind</th><th>count</th><th>ids</th></tr>")
    for kind in ID_KINDS:
        listed = ids[kind]
        more = (
            f" … (+{len(listed) - SHOWN_IDS} more)" if len(listed) > SHOWN_IDS else ""
        )
        text = ", ".join(listed[:SHOWN_IDS]) + more
        parts.append(
            f"<tr><td>{kind}</td><td class='num {'bad' if listed else 'ok'}'>{len(listed)}</td>"
            f"<td><code>{escape(text) or '–'}</code></td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


def _loads(found: dict) -> str:
    if not found["loads"]:
        return ""
    parts = [
        (
            "<h2>Loads</h2><table id='loads'><tr><th>load</th><th>requests</th>"
            "<th>failed</th><th>req/s</th><th>p95</th><th>thresholds</th></tr>"
        )
    ]
    for load in found["loads"]:
        marks = []
        for metric, verdicts in (load["thresholds"] or {}).items():
            for expression, ok in (verdicts or {}).items():
                marks.append(
                    f"<span class='{'ok' if ok else 'bad'}'>{'✓' if ok else '✗'} "
                    f"{escape(metric)} {escape(expression)}</span>"
                )
        if load["error"]:
            marks.append(f"<span class='bad'>{escape(str(load['error']))}</span>")
        parts.append(
            f"<tr><td>{escape(load['name'])}</td>"
            f"<td class='num'>{_number(load['requests_count'])}</td>"
            f"<td class='num'>{_number(load['failed_count'])}</td>"
            f"<td class='num'>{_number(load['rps'], 1)}</td>"
            f"<td class='num'>{_number(load['p95_ms'], 1)} ms</td>"
            f"<td>{'<br>'.join(marks) or '–'}</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


def _checks(found: dict) -> str:
    failed = [check for check in found["verdict"].checks if not check.ok]
    if not failed:
        return ""
    rows = "".join(
        f"<tr><td>{escape(c.kind)}</td><td>{escape(c.name)}</td>"
        f"<td><code>{escape(c.message)}</code></td></tr>"
        for c in failed
    )
    return (
        "<h2>What failed</h2><table id='failed-checks'><tr><th>kind</th><th>name</th>"
        f"<th>why</th></tr>{rows}</table>"
    )


def render_html(journal: dict, found: dict | None = None) -> str:
    """The report of `journal` as one HTML document (`found`: its `facts`, if known)."""
    found = found if found is not None else facts(journal)
    body = "".join(
        [
            _header(found),
            _cards(found),
            _checks(found),
            _charts(found),
            _timeline(found),
            _steady_state(found),
            _recovery(found),
            _ids(found),
            _loads(found),
        ]
    )
    title = escape(f"Chaos report: {found['title'] or 'experiment'}")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}<p class='small muted'>chaostoolkit-pika {escape(__version__)}"
        f" · report made {_when(datetime.now(UTC).timestamp())}</p></main></body></html>\n"
    )
