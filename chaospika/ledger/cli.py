"""`chaospika cleanup [--run ID] [--dry-run]`: undo every fault still outstanding."""

import argparse

from chaospika.ledger.undo import undo_outstanding

__all__ = ["add_cleanup_commands"]


def _line(report: dict) -> str:
    target = report.get("target") or {}
    where = target.get("pidfile") or target.get("pid") or target
    head = f"{report['fault']} ({report['kind']} of {where}, run {report['run_id']})"
    if "would_undo" in report:
        return f"would undo {head}" if report["would_undo"] else f"cannot undo {head}"
    if report.get("error"):
        return f"FAILED {head}: {report['error']}"
    return f"{'already undone' if report.get('already') else 'undone'} {head}"


def run_cleanup(args: argparse.Namespace) -> int:
    """Undo (or list, with --dry-run) the outstanding faults; 1 if an undo failed."""
    reports = undo_outstanding(args.run, by="cleanup", dry_run=args.dry_run)
    for report in reports:
        print(_line(report))
    if not reports:
        print("nothing to undo" + (f" for run {args.run}" if args.run else ""))
    return 1 if any(report.get("error") for report in reports) else 0


def add_cleanup_commands(commands: argparse._SubParsersAction) -> None:
    """Add `cleanup`."""
    parser = commands.add_parser(
        "cleanup", help="undo every fault still in force (after a crash, say)"
    )
    parser.add_argument("--run", metavar="ID", help="only the faults of this run")
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be undone, undo nothing"
    )
    parser.set_defaults(handler=run_cleanup)
