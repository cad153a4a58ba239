"""`chaospika cleanup [--run ID] [--dry-run] [--prune AGE]`: undo what is still in force.

With ``--prune AGE`` it then deletes the records (and snapshots) of faults undone
more than AGE ago ("7d", "12h", "0" for all), so the ledger stays small.
"""

import argparse
import re

from chaospika.ledger.records import prune
from chaospika.ledger.undo import undo_outstanding

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

__all__ = ["add_cleanup_commands"]


def _line(report: dict) -> str:
    target = report.get("target") or {}
    where = (
        target.get("pidfile")
        or target.get("pid")
        or target.get("url")
        or target.get("label")
        or target
    )
    head = f"{report['fault']} ({report['kind']} of {where}, run {report['run_id']})"
    if "would_undo" in report:
        return f"would undo {head}" if report["would_undo"] else f"cannot undo {head}"
    if report.get("error"):
        return f"FAILED {head}: {report['error']}"
    return f"{'already undone' if report.get('already') else 'undone'} {head}"


def age_arg(value: str) -> float:
    """An age in seconds from "0", "90s", "30m", "12h" or "7d"."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", value.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"must be an age such as 0, 90s, 30m, 12h or 7d, got {value!r}"
        )
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def run_cleanup(args: argparse.Namespace) -> int:
    """Undo (or list, with --dry-run) the outstanding faults; 1 if an undo failed."""
    reports = undo_outstanding(args.run, by="cleanup", dry_run=args.dry_run)
    for report in reports:
        print(_line(report))
    if not reports:
        print("nothing to undo" + (f" for run {args.run}" if args.run else ""))
    failed = any(report.get("error") for report in reports)
    if args.prune is not None and not args.dry_run:
        pruned = prune(args.prune)
        print(f"pruned {len(pruned)} undone record(s)")
    return 1 if failed else 0


def add_cleanup_commands(commands: argparse._SubParsersAction) -> None:
    """Add `cleanup`."""
    parser = commands.add_parser(
        "cleanup", help="undo every fault still in force (after a crash, say)"
    )
    parser.add_argument("--run", metavar="ID", help="only the faults of this run")
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be undone, undo nothing"
    )
    parser.add_argument(
        "--prune",
        metavar="AGE",
        type=age_arg,
        help="then delete records undone more than AGE ago (7d, 12h, 0 for all)",
    )
    parser.set_defaults(handler=run_cleanup)
