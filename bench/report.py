"""What a benchmark reports: a Markdown table, targets met or not, notes."""

from dataclasses import dataclass, field

from peers import Run

__all__ = ["Section", "Target", "num", "percent", "ratio", "render", "verdict"]


@dataclass
class Target:
    """One goal from the issue and whether this run met it (None: not measured)."""

    goal: str
    met: bool | None
    detail: str


@dataclass
class Section:
    """One benchmark's table, targets and notes."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    load: str = ""  # load average before and after, for the record

    def add_run_notes(self) -> None:
        """Failures, engine warnings and where chaospika's CPU went."""
        for run in self.runs:
            if not run.ok:
                self.notes.append(run.failure())
            self.notes.extend(f"{run.tool} {run.label}: {w}" for w in run.notes)
            if run.run_cpu_s is not None and run.ok:
                self.notes.append(
                    f"{run.tool} {run.label}: {run.run_cpu_s:.2f} of its "
                    f"{run.cpu_s:.2f} CPU s inside runner.run() (the rest: "
                    "interpreter start and imports)"
                )


def num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def verdict(met: bool | None) -> str:
    return {True: "MET", False: "NOT MET", None: "NOT MEASURED"}[met]


def render(section: Section) -> str:
    """The section as Markdown: heading, table, targets, notes."""
    lines = [f"### {section.title}", ""]
    lines.append("| " + " | ".join(section.columns) + " |")
    lines.append("|" + "|".join("---" for _ in section.columns) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in section.rows)
    lines.append("")
    for target in section.targets:
        lines.append(
            f"- target {target.goal}: **{verdict(target.met)}** ({target.detail})"
        )
    lines.extend(f"- note: {note}" for note in section.notes)
    lines.append(f"- load average before / after: {section.load}")
    return "\n".join(lines) + "\n"
