"""Read a Chaos Toolkit journal and decide: passed, or which way it failed.

`chaos run` exits 0 when the steady state before the method is not met (the
method is skipped, nothing was tested) and does not look at load thresholds;
this verdict does. Every reason found is listed; the exit code is that of the
first in this order: unreadable, interrupted, baseline not met, deviated,
activity failed, threshold failed, rollback failed.
"""

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CODES", "Check", "Verdict", "judge"]

# Exit codes, documented in README ("CI verdict").
CODES = {
    "passed": 0,
    "deviated": 1,
    "baseline-not-met": 2,
    "activity-failed": 3,
    "threshold-failed": 4,
    "rollback-failed": 5,
    "interrupted": 6,
    "unreadable": 7,
}
PRECEDENCE = (
    "unreadable",
    "interrupted",
    "baseline-not-met",
    "deviated",
    "activity-failed",
    "threshold-failed",
    "rollback-failed",
)


@dataclass
class Check:
    """One judged thing: a probe, an activity, a load threshold or a rollback."""

    kind: str  # "before", "after", "method", "threshold", "rollback"
    name: str
    ok: bool
    message: str = ""
    seconds: float = 0.0


@dataclass
class Verdict:
    """The outcome: `outcome` names the deciding reason, `reasons` all of them."""

    outcome: str
    reasons: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    title: str = ""
    status: str = ""

    @property
    def code(self) -> int:
        """The process exit code of this verdict."""
        return CODES[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for `--json`)."""
        return {
            "outcome": self.outcome,
            "code": self.code,
            "title": self.title,
            "status": self.status,
            "reasons": self.reasons,
            "checks": [check.__dict__ for check in self.checks],
        }


def _brief(value: Any, limit: int = 300) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


ID_KEYS = ("lost", "stuck", "duplicates", "oversold", "unexpected")
SHOWN_IDS = 20


def _explain(output: Any) -> str:
    """What a probe's output says went wrong: its violations and the ids named."""
    if not isinstance(output, dict) or "violations" not in output:
        return _brief(output)
    parts = ["; ".join(map(str, output["violations"])) or "inconsistent"]
    for key in ID_KEYS:
        ids = list(output.get(key) or [])
        if ids:
            more = f" (+{len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else ""
            parts.append(f"{key}: {', '.join(map(str, ids[:SHOWN_IDS]))}{more}")
    return " | ".join(parts)


def _failure(run: dict) -> str:
    exception = run.get("exception")
    if isinstance(exception, list) and exception:
        return _brief(str(exception[-1]).strip())
    return _brief(run.get("output"))


def _probe_checks(kind: str, hypothesis: dict) -> list[Check]:
    checks = []
    for run in hypothesis.get("probes") or []:
        name = run.get("activity", {}).get("name", "?")
        ok = run.get("status") == "succeeded" and run.get("tolerance_met") is True
        message = "" if ok else _failure(run)
        if not ok and run.get("status") == "succeeded":
            message = f"tolerance not met: {_explain(run.get('output'))}"
        checks.append(Check(kind, name, ok, message, run.get("duration") or 0.0))
    return checks


def _threshold_checks(where: str, summary: Any) -> list[Check]:
    if not isinstance(summary, dict) or "thresholds_passed" not in summary:
        return []
    checks = []
    for metric, marks in (summary.get("thresholds") or {}).items():
        for expression, ok in (marks or {}).items():
            name = f"{where}: {metric} {expression}"
            message = "" if ok else f"threshold crossed: {metric} {expression}"
            checks.append(Check("threshold", name, bool(ok), message))
    if not checks and summary.get("thresholds_passed") is False:
        checks.append(Check("threshold", where, False, "thresholds failed"))
    return checks


def _loads(journal: dict) -> list[Check]:
    checks = []
    for run in journal.get("run") or []:
        name = run.get("activity", {}).get("name", "?")
        checks += _threshold_checks(name, run.get("output"))
    for name, summary in (journal.get("pika_loads") or {}).items():
        checks += _threshold_checks(f"load {name}", summary)
    return checks


def judge(journal: Any) -> Verdict:
    """Return the verdict of a journal (a dict read from journal.json)."""
    if not isinstance(journal, dict) or "status" not in journal:
        return Verdict("unreadable", ["this is not a Chaos Toolkit journal"])
    title = (journal.get("experiment") or {}).get("title", "")
    status = str(journal.get("status"))
    states = journal.get("steady_states") or {}
    before, after = states.get("before") or {}, states.get("after") or {}
    checks = _probe_checks("before", before) + _probe_checks("after", after)
    for run in journal.get("run") or []:
        name = run.get("activity", {}).get("name", "?")
        ok = run.get("status") == "succeeded"
        message = "" if ok else f"{run.get('status')}: {_failure(run)}"
        checks.append(Check("method", name, ok, message, run.get("duration") or 0.0))
    checks += _loads(journal)
    for run in journal.get("rollbacks") or []:
        name = run.get("activity", {}).get("name", "?")
        ok = run.get("status") == "succeeded"
        message = "" if ok else f"{run.get('status')}: {_failure(run)}"
        checks.append(Check("rollback", name, ok, message, run.get("duration") or 0.0))

    found: dict[str, str] = {}
    if status in ("interrupted", "aborted"):
        found["interrupted"] = f"the run was {status}; nothing after that is known"
    if before and before.get("steady_state_met") is not True:
        bad = [c.name for c in checks if c.kind == "before" and not c.ok]
        found["baseline-not-met"] = (
            "the steady state before the method was not met "
            f"({', '.join(bad) or 'unknown probe'}): the method did not run, "
            "nothing was tested"
        )
    elif not before and not found:
        found["baseline-not-met"] = "the journal has no steady state before the method"
    if after and after.get("steady_state_met") is False:
        bad = [c.name for c in checks if c.kind == "after" and not c.ok]
        found["deviated"] = f"the system deviated: {', '.join(bad)}"
    elif before.get("steady_state_met") is True and not after and not found:
        found["interrupted"] = "the run ended without a steady state after the method"
    failed = [c.name for c in checks if c.kind == "method" and not c.ok]
    if failed:
        found["activity-failed"] = f"method activities failed: {', '.join(failed)}"
    crossed = [c.name for c in checks if c.kind == "threshold" and not c.ok]
    if crossed:
        found["threshold-failed"] = f"load thresholds failed: {', '.join(crossed)}"
    safety = journal.get("pika_safety") or {}
    for error in safety.get("errors") or []:
        checks.append(Check("rollback", "safety control undo", False, _brief(error)))
    if safety.get("outstanding"):
        left = ", ".join(map(str, safety["outstanding"]))
        checks.append(Check("rollback", "faults left in force", False, left))
    undone = [c.name for c in checks if c.kind == "rollback" and not c.ok]
    if undone:
        found["rollback-failed"] = f"rollbacks failed: {', '.join(undone)}"
    reasons = [found[key] for key in PRECEDENCE if key in found]
    outcome = next((key for key in PRECEDENCE if key in found), "passed")
    return Verdict(outcome, reasons, checks, title, status)
