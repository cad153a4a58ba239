"""`chaospika report JOURNAL [-o report.html]`: write the journal's HTML report."""

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_report_commands", "run_report"]


def run_report(args: argparse.Namespace) -> int:
    """Write the report; 0 when written, 1 when the journal cannot be read."""
    try:
        with open(args.journal) as handle:
            journal = json.load(handle)
    except (OSError, ValueError) as error:
        print(
            f"error: cannot read the journal {args.journal}: {error}", file=sys.stderr
        )
        return 1
    if not isinstance(journal, dict) or "status" not in journal:
        print(f"error: {args.journal} is not a Chaos Toolkit journal", file=sys.stderr)
        return 1
    from chaospika.report.html import render_html  # only when a report is asked for

    output = Path(args.output or Path(args.journal).with_name("report.html"))
    output.write_text(render_html(journal))
    print(f"report written to {output}")
    return 0


def add_report_commands(commands: argparse._SubParsersAction) -> None:
    """Add `report`."""
    parser = commands.add_parser(
        "report",
        help="write a self-contained HTML report of a chaos journal",
        description=(
            "One HTML file, nothing fetched when it is viewed: the verdict, the steady "
            "state before/after, a timeline of every activity, request rate, p95 latency, "
            "error rate and WebSocket latency over time with each fault shaded, recovery "
            "time, max downtime and the lost/stuck/duplicated ids. Exit 0 when written, "
            "1 when the journal cannot be read."
        ),
    )
    parser.add_argument("journal", help="journal.json written by `chaos run`")
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write the report (default: report.html beside the journal)",
    )
    parser.set_defaults(handler=run_report)
