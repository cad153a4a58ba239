"""`chaospika verdict JOURNAL [--junit FILE] [--json]`: exit with the experiment's verdict."""

import argparse
import json
import sys

from chaospika.verdict.judge import CODES, Verdict, judge
from chaospika.verdict.junit import junit_xml

__all__ = ["add_verdict_commands", "read_verdict"]

EPILOG = "exit codes: " + ", ".join(f"{code} {name}" for name, code in CODES.items())


def read_verdict(path: str) -> Verdict:
    """Judge the journal at `path`; a missing or broken file is 'unreadable'."""
    try:
        with open(path) as handle:
            journal = json.load(handle)
    except (OSError, ValueError) as error:
        return Verdict("unreadable", [f"cannot read the journal {path}: {error}"])
    return judge(journal)


def run_verdict(args: argparse.Namespace) -> int:
    """Print the verdict, write the reports asked for, return its exit code."""
    verdict = read_verdict(args.journal)
    if args.junit:
        with open(args.junit, "w") as handle:
            handle.write(junit_xml(verdict))
    if args.json:
        print(json.dumps(verdict.as_dict(), indent=2))
        return verdict.code
    print(f"verdict: {verdict.outcome} (exit {verdict.code})  {verdict.title}")
    for reason in verdict.reasons:
        print(f"  - {reason}")
    for check in verdict.checks:
        if not check.ok:
            print(f"  FAILED {check.kind}: {check.name}: {check.message}")
    return verdict.code


def add_verdict_commands(commands: argparse._SubParsersAction) -> None:
    """Add `verdict`."""
    parser = commands.add_parser(
        "verdict",
        help="judge a chaos journal: exit 0 only if the experiment really passed",
        epilog=EPILOG,
    )
    parser.add_argument("journal", help="journal.json written by `chaos run`")
    parser.add_argument("--junit", metavar="FILE", help="also write JUnit XML here")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.set_defaults(handler=run_verdict)


if __name__ == "__main__":
    sys.exit(
        run_verdict(argparse.Namespace(journal=sys.argv[1], junit=None, json=False))
    )
