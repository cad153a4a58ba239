"""Print what a Chaos Toolkit journal says, in a few lines a person can read."""

import json
import sys
from typing import Any

__all__ = ["main", "summarize"]


def _brief(output: Any) -> str:
    if (
        isinstance(output, dict)
        and "thresholds_passed" in output
        and "metrics" in output
    ):
        metrics = output.get("metrics", {})
        shown = {
            "thresholds_passed": output["thresholds_passed"],
            "requests": metrics.get("http_reqs", {}).get("count"),
            "failed": metrics.get("http_req_failed", {}).get("passes"),
            "captured": {k: len(v) for k, v in output.get("captures", {}).items()},
        }
        return json.dumps(shown)
    if isinstance(output, dict) and {"status", "headers", "body"} <= set(output):
        return json.dumps({"status": output["status"], "body": output["body"]})[:400]
    if isinstance(output, dict):
        keys = [
            "consistent",
            "violations",
            "ratio",
            "failed",
            "drained",
            "drain_seconds",
            "busy_ms",
            "backlog",
            "lost_count",
            "stuck_count",
            "duplicate_count",
            "oversold_count",
            "acknowledged",
            "requests",
            "statuses",
            "killed",
            "started",
            "pid",
        ]
        shown = {k: output[k] for k in keys if k in output}
        for name in ("lost", "stuck", "duplicates", "oversold"):
            if output.get(name):
                shown[name] = output[name]
        return json.dumps(shown or output, default=str)[:400]
    return json.dumps(output, default=str)[:400]


def summarize(journal: dict[str, Any]) -> list[str]:
    """Return the lines that tell how the experiment went."""
    lines = [
        f"experiment: {journal['experiment']['title']}",
        (
            f"status: {journal['status']}   deviated: {journal['deviated']}   "
            f"duration: {journal.get('duration', 0):.1f}s"
        ),
    ]
    for phase in ("before", "after"):
        hypothesis = journal.get("steady_states", {}).get(phase) or {}
        if not hypothesis:
            continue
        lines.append(
            f"steady state {phase} the method: met={hypothesis.get('steady_state_met')}"
        )
        for probe in hypothesis.get("probes", []):
            mark = "ok " if probe.get("tolerance_met") else "BAD"
            lines.append(
                f"  {mark} {probe['activity']['name']}: {_brief(probe.get('output'))}"
            )
    lines.append("method:")
    for run in journal.get("run", []):
        out = run.get("output")
        text = _brief(out) if out is not None else run.get("exception", [""])[-1:]
        lines.append(f"  [{run['status']}] {run['activity']['name']}: {text}")
    for run in journal.get("rollbacks", []):
        lines.append(f"  rollback [{run['status']}] {run['activity']['name']}")
    return lines


def main(argv: list[str] = None) -> int:
    """`python -m chaospika.report journal.json`."""
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "journal.json"
    with open(path) as handle:
        print("\n".join(summarize(json.load(handle))))
    return 0
