"""What a journal says, as plain data: the report and `chaospika run`'s summary read it.

Times are seconds since the epoch. A load's series points have ``t`` seconds
since the load started, at the end of their second; the load's start is its
summary's ``started_at`` when the load engine gives one, else the start of the
activity that ran it, else the start of the experiment (a load run by a control).
"""

import math
from datetime import UTC, datetime
from typing import Any

from chaospika.report.text import _brief
from chaospika.verdict import judge

__all__ = [
    "ID_KINDS",
    "activities",
    "consistency_ids",
    "facts",
    "faults",
    "is_load_summary",
    "load_names",
    "load_summaries",
    "loads",
    "parse_time",
    "recovery",
    "steady_state_rows",
    "websocket_runs",
]

ID_KINDS = ("lost", "stuck", "duplicates", "oversold")
PHASES = (("before", "steady state before"), ("method", "method"))
RECOVERY_KEYS = ("recovery_seconds", "drain_seconds", "time_to_recover_seconds")


def parse_time(value: Any) -> float | None:
    """An ISO 8601 time of the journal (naive means UTC) as epoch seconds, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def load_names(journal: dict) -> list[str]:
    """Names of the loads a journal shows: `run_load`/`stop_load` runs and `pika_loads`."""
    names: list[str] = []
    runs = []
    for phase in ("before", "after"):
        hypothesis = (journal.get("steady_states") or {}).get(phase) or {}
        runs += hypothesis.get("probes") or []
    runs += (journal.get("run") or []) + (journal.get("rollbacks") or [])
    for run in runs:
        output = run.get("output")
        provider = (run.get("activity") or {}).get("provider") or {}
        if is_load_summary(output):
            name = output.get("name")
        elif provider.get("module") == "chaospika.load.actions":
            name = (provider.get("arguments") or {}).get("name", "load")
        else:
            continue
        if isinstance(name, str) and name not in names:
            names.append(name)
    for name in journal.get("pika_loads") or {}:
        if name not in names:
            names.append(name)
    return names


def is_load_summary(output: Any) -> bool:
    """Whether an activity's output is a load's summary (`run_load`, `stop_load`)."""
    return (
        isinstance(output, dict)
        and "thresholds_passed" in output
        and isinstance(output.get("metrics"), dict)
        and isinstance(output.get("name"), str)
    )


def websocket_runs(journal: dict) -> list[dict]:
    """Activities that measured WebSocket message latency (`chaospika.ws` probes).

    Each: phase, name, start, end and `p95_ms` (the output's ``latency_p95_ms``).
    """
    rows = []
    for phase, run in _runs(journal):
        output = run.get("output")
        if not isinstance(output, dict):
            continue
        p95 = output.get("latency_p95_ms")
        start, end = parse_time(run.get("start")), parse_time(run.get("end"))
        if isinstance(p95, (int, float)) and not isinstance(p95, bool) and start:
            name = str((run.get("activity") or {}).get("name", "?"))
            rows.append(
                {"phase": phase, "name": name, "start": start, "end": end or start}
                | {"p95_ms": float(p95)}
            )
    return rows


def _runs(journal: dict) -> list[tuple[str, dict]]:
    """Every run of the journal in order, with its phase."""
    states = journal.get("steady_states") or {}
    found = []
    for probe in (states.get("before") or {}).get("probes") or []:
        found.append(("before", probe))
    for run in journal.get("run") or []:
        found.append(("method", run))
    for probe in (states.get("after") or {}).get("probes") or []:
        found.append(("after", probe))
    for run in journal.get("rollbacks") or []:
        found.append(("rollback", run))
    return [(phase, run) for phase, run in found if isinstance(run, dict)]


def activities(journal: dict) -> list[dict]:
    """Every activity run: phase, name, type, start, end, status, brief output."""
    rows = []
    for phase, run in _runs(journal):
        activity = run.get("activity") or {}
        start, end = parse_time(run.get("start")), parse_time(run.get("end"))
        if "output" in run and run.get("output") is not None:
            brief = _brief(run["output"])
        elif run.get("exception"):
            brief = str(run["exception"][-1]).strip()[:400]
        else:
            brief = ""
        rows.append(
            {
                "phase": phase,
                "name": str(activity.get("name", "?")),
                "type": str(activity.get("type", "")),
                "background": bool(activity.get("background")),
                "start": start,
                "end": end if end is not None else start,
                "status": str(run.get("status", "")),
                "tolerance_met": run.get("tolerance_met"),
                "brief": brief,
            }
        )
    return rows


def load_summaries(journal: dict) -> dict[str, dict]:
    """{load name: its end-of-run summary} (`run_load`/`stop_load` outputs, `pika_loads`)."""
    return {name: found[0] for name, found in _load_summaries(journal).items()}


def _load_summaries(journal: dict) -> dict[str, tuple[dict, float | None]]:
    """{load name: (its summary, start of the activity that ran it)}."""
    found: dict[str, tuple[dict, float | None]] = {}
    for _, run in _runs(journal):
        output = run.get("output")
        if is_load_summary(output):
            name = str(output["name"])
            previous = found.get(name, (None, None))[1]
            started = parse_time(run.get("start"))
            found[name] = (output, previous if previous is not None else started)
    for name, summary in (journal.get("pika_loads") or {}).items():
        if isinstance(summary, dict):
            found[name] = (summary, found.get(name, (None, None))[1])
    return found


def _points(series: dict, metric: str) -> list[dict]:
    points = series.get(metric) or []
    return [
        p
        for p in points
        if isinstance(p, dict) and isinstance(p.get("t"), (int, float))
    ]


def _timeline(series: dict) -> list[float]:
    """Every tick any metric has a point at, in order."""
    ticks = sorted(
        {round(p["t"], 3) for metric in series for p in _points(series, metric)}
    )
    return ticks


def loads(journal: dict) -> list[dict]:
    """Each load: name, summary figures, start time and per-second series (epoch x).

    `series` maps a chart key to [(x, y)] where x is the middle of the second
    (epoch seconds) and y None for a second without a value (a gap):
    ``rps`` requests per second (0 for a second without requests between
    two with some), ``p95_ms``
    request duration p95, ``error_pct`` failed requests in percent,
    ``ws_p95_ms`` WebSocket message latency p95, ``vus`` active virtual users.
    """
    summaries = _load_summaries(journal)
    kept = journal.get("pika_series") or {}
    journal_start = parse_time(journal.get("start"))
    result = []
    for name in load_names(journal) + [n for n in kept if n not in summaries]:
        if any(load["name"] == name for load in result):
            continue
        summary, activity_start = summaries.get(name, ({}, None))
        started = parse_time(summary.get("started_at"))
        for candidate in (activity_start, journal_start):
            if started is None:
                started = candidate
        metrics = summary.get("metrics") or {}
        raw = (kept.get(name) or {}).get("metrics") or {}
        result.append(
            {
                "name": name,
                "started_at": started,
                "thresholds_passed": summary.get("thresholds_passed"),
                "thresholds": summary.get("thresholds") or {},
                "duration_seconds": summary.get("duration_s"),
                "requests_count": (metrics.get("http_reqs") or {}).get("count"),
                "failed_count": (metrics.get("http_req_failed") or {}).get("passes"),
                "rps": (metrics.get("http_reqs") or {}).get("rate"),
                "p95_ms": (metrics.get("http_req_duration") or {}).get("p(95)"),
                "ws_p95_ms": (metrics.get("ws_msg_latency") or {}).get("p(95)"),
                "error": summary.get("error") or (kept.get(name) or {}).get("error"),
                "has_series": bool(raw),
                "series": _chart_series(raw, started),
                "downtime_seconds": _outage(raw),
                "failing_ticks": _failing_ticks(raw, started),
            }
        )
    return result


def _chart_series(raw: dict, started: float | None) -> dict[str, list]:
    if not raw or started is None:
        return {}
    ticks = _timeline(raw)
    middles, previous = {}, 0.0
    for tick in ticks:
        middles[tick] = started + (previous + tick) / 2
        previous = tick
    by_tick = {
        metric: {round(p["t"], 3): p for p in _points(raw, metric)} for metric in raw
    }

    def line(metric: str, read, missing: float | None = None) -> list:
        """Points of `metric`; a second without one inside its span is `missing`."""
        if not by_tick.get(metric):
            return []
        points = by_tick[metric]
        first, last = min(points), max(points)
        values = []
        for tick in ticks:
            point = points.get(tick)
            if point:
                values.append((middles[tick], read(point)))
            elif first < tick < last:
                values.append((middles[tick], missing))
        return values

    return {
        "rps": line("http_reqs", lambda p: p.get("rate"), 0.0),
        "p95_ms": line("http_req_duration", lambda p: p.get("p(95)")),
        "error_pct": line("http_req_failed", lambda p: 100.0 * p.get("rate", 0.0)),
        "ws_p95_ms": line("ws_msg_latency", lambda p: p.get("p(95)")),
        "vus": line("vus", lambda p: p.get("value")),
    }


def _tick_outcomes(raw: dict) -> list[tuple[float, float, int, int]]:
    """(start, end, requests that failed, requests) of each tick, since the load start."""
    failed = {round(p["t"], 3): p for p in _points(raw, "http_req_failed")}
    outcomes, previous = [], 0.0
    for tick in _timeline(raw):
        point = failed.get(tick) or {}
        outcomes.append(
            (
                previous,
                tick,
                int(point.get("passes") or 0),
                int(point.get("total") or 0),
            )
        )
        previous = tick
    return outcomes


def _outage(raw: dict) -> float | None:
    """Longest span from a second where every request failed to the next success."""
    if "http_req_failed" not in raw:
        return None
    longest, began = 0.0, None
    for start, end, bad, total in _tick_outcomes(raw):
        if total and bad == total and began is None:
            began = start
        elif total and bad < total and began is not None:
            longest = max(longest, start - began)
            began = None
        if began is not None:
            longest = max(longest, end - began)
    return round(longest, 3)


def _failing_ticks(raw: dict, started: float | None) -> list[tuple[float, float]]:
    """(start, end) epoch of each second in which some request failed."""
    if started is None:
        return []
    return [
        (started + start, started + end)
        for start, end, bad, _ in _tick_outcomes(raw)
        if bad
    ]


def _target_text(target: Any) -> str:
    if not isinstance(target, dict):
        return str(target)
    for key in ("pidfile", "container", "pod", "url", "redis_url", "host", "name"):
        if target.get(key):
            return str(target[key])
    return ", ".join(f"{k}={v}" for k, v in list(target.items())[:3])


def faults(journal: dict) -> list[dict]:
    """The run's faults (the safety control's ``pika_faults``) with their windows.

    A window starts when the fault was applied (else recorded) and ends when it
    was undone, else at the end of the experiment (still ``open``).
    """
    end_of_run = parse_time(journal.get("end"))
    rows = []
    for record in journal.get("pika_faults") or []:
        if not isinstance(record, dict):
            continue
        start = parse_time(record.get("applied_at")) or parse_time(
            record.get("created_at")
        )
        undone = parse_time(record.get("undone_at"))
        if start is None:
            continue
        rows.append(
            {
                "id": str(record.get("id", "")),
                "kind": str(record.get("kind", "fault")),
                "target": _target_text(record.get("target")),
                "state": str(record.get("state", "")),
                "start": start,
                "end": undone if undone is not None else (end_of_run or start),
                "undone": undone is not None,
                "undone_by": record.get("undone_by"),
                "error": record.get("error"),
            }
        )
    return sorted(rows, key=lambda row: row["start"])


def consistency_ids(journal: dict) -> dict:
    """Lost, stuck, duplicated and oversold ids the consistency probes named.

    Taken from the last probe run whose output has a ``consistent`` key (the
    hypothesis after the method when it ran); {} when there is none.
    """
    chosen = None
    for phase, run in _runs(journal):
        output = run.get("output")
        if isinstance(output, dict) and "consistent" in output:
            chosen = (phase, run, output)
    if chosen is None:
        return {}
    phase, run, output = chosen
    found = {
        "probe": (run.get("activity") or {}).get("name", "?"),
        "phase": phase,
        "consistent": output.get("consistent"),
        "violations": list(output.get("violations") or []),
        "acknowledged_count": output.get("acknowledged_count"),
    }
    for kind in ID_KINDS:
        value = output.get(kind) or []
        if isinstance(value, dict):  # duplicates: {id: times stored}
            ids = [f"{key} (x{count})" for key, count in value.items()]
        else:
            ids = [str(item) for item in value]
        found[kind] = ids
        found[f"{kind}_count"] = len(ids)
    return found


def recovery(journal: dict, load_rows: list[dict], fault_rows: list[dict]) -> dict:
    """Recovery time and the longest outage, each with where it was measured.

    Recovery: a measure (`drain_seconds`, `recovery_seconds`...) of an activity of
    the method that started after the first fault (if any); else, from the load series, the
    time from a fault's start to the end of the last second with a failed
    request before the next fault. Max downtime: the longest span from a second
    in which every request failed to the next success, and availability probes'
    ``longest_outage_seconds``.
    """
    first_fault = fault_rows[0]["start"] if fault_rows else None
    measured = []
    for phase, run in _runs(journal):
        output = run.get("output")
        started = parse_time(run.get("start"))
        if phase != "method" or not isinstance(output, dict):
            continue
        if first_fault is not None and started is not None and started < first_fault:
            continue
        for key in RECOVERY_KEYS:
            if isinstance(output.get(key), (int, float)):
                name = (run.get("activity") or {}).get("name", "?")
                measured.append((float(output[key]), f"{name}: {key}"))
    per_fault = []
    for index, fault in enumerate(fault_rows):
        limit = (
            fault_rows[index + 1]["start"] if index + 1 < len(fault_rows) else math.inf
        )
        last_failure = None
        for load in load_rows:
            for start, end in load["failing_ticks"]:
                if end > fault["start"] and start < limit:
                    last_failure = max(last_failure or end, end)
        per_fault.append(
            {
                "fault": fault["id"],
                "in_force_seconds": round(fault["end"] - fault["start"], 3),
                "errors_for_seconds": (
                    None
                    if last_failure is None
                    else round(last_failure - fault["start"], 3)
                ),
            }
        )
    if measured:
        seconds, source = max(measured, key=lambda pair: pair[0])
        headline = {"seconds": round(seconds, 3), "source": source}
    elif any(row["errors_for_seconds"] is not None for row in per_fault):
        seconds = max(
            row["errors_for_seconds"]
            for row in per_fault
            if row["errors_for_seconds"] is not None
        )
        headline = {"seconds": seconds, "source": "load series: last failed request"}
    elif per_fault and any(load["has_series"] for load in load_rows):
        headline = {"seconds": 0.0, "source": "load series: no request failed"}
    else:
        headline = {"seconds": None, "source": "not measured"}

    outages = [
        (load["downtime_seconds"], f"load {load['name']}")
        for load in load_rows
        if load["downtime_seconds"] is not None
    ]
    for _, run in _runs(journal):
        output = run.get("output")
        if isinstance(output, dict) and isinstance(
            output.get("longest_outage_seconds"), (int, float)
        ):
            name = (run.get("activity") or {}).get("name", "?")
            outages.append((float(output["longest_outage_seconds"]), f"probe {name}"))
    if outages:
        seconds, source = max(outages, key=lambda pair: pair[0])
        downtime = {"seconds": round(seconds, 3), "source": source}
    else:
        downtime = {"seconds": None, "source": "not measured"}
    return {"recovery": headline, "max_downtime": downtime, "per_fault": per_fault}


def steady_state_rows(journal: dict) -> list[dict]:
    """One row per hypothesis probe: its result before and after the method."""
    states = journal.get("steady_states") or {}
    rows: dict[str, dict] = {}
    for phase in ("before", "after"):
        for probe in (states.get(phase) or {}).get("probes") or []:
            name = str((probe.get("activity") or {}).get("name", "?"))
            row = rows.setdefault(name, {"name": name, "before": None, "after": None})
            output = probe.get("output")
            row[phase] = {
                "met": probe.get("tolerance_met") is True
                and probe.get("status") == "succeeded",
                "status": probe.get("status"),
                "brief": _brief(output)
                if output is not None
                else str((probe.get("exception") or [""])[-1]).strip()[:400],
            }
    return list(rows.values())


def facts(journal: dict) -> dict:
    """Everything the report shows, from one journal."""
    verdict = judge(journal)
    load_rows = loads(journal)
    fault_rows = faults(journal)
    rows = activities(journal)
    times = [t for row in rows for t in (row["start"], row["end"]) if t is not None]
    start = parse_time(journal.get("start")) or (min(times) if times else None)
    end = parse_time(journal.get("end")) or (max(times) if times else start)
    first = next((load for load in load_rows if load["requests_count"] is not None), {})
    return {
        "title": (journal.get("experiment") or {}).get("title", "") or verdict.title,
        "description": (journal.get("experiment") or {}).get("description", ""),
        "status": journal.get("status"),
        "deviated": journal.get("deviated"),
        "verdict": verdict,
        "start": start,
        "end": end,
        "duration_seconds": journal.get("duration"),
        "activities": rows,
        "steady_state": steady_state_rows(journal),
        "loads": load_rows,
        "websocket": websocket_runs(journal),
        "faults": fault_rows,
        "ids": consistency_ids(journal),
        "requests_count": first.get("requests_count"),
        "failed_count": first.get("failed_count"),
        "p95_ms": first.get("p95_ms"),
        **recovery(journal, load_rows, fault_rows),
    }
