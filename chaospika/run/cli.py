"""`chaospika run EXPERIMENT... [--results DIR]`: run, judge and report experiments."""

import argparse
import importlib.util
import sys

from chaospika.verdict.cli import EPILOG

__all__ = ["NO_CHAOS", "add_run_commands", "run_experiments"]

NO_CHAOS = 7  # no journal can be read: the verdict's "unreadable"


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value!r}")
    return number


def run_experiments(args: argparse.Namespace) -> int:
    """Run the experiments; exit with the worst verdict code."""
    from chaospika.run.runner import run_batch  # only when experiments are run

    if importlib.util.find_spec("chaostoolkit") is None:
        print(
            "error: the chaos CLI is not installed here: pip install chaostoolkit",
            file=sys.stderr,
        )
        return NO_CHAOS
    options: list[str] = []
    for var in args.var or ():
        options += ["--var", var]
    for path in args.var_file or ():
        options += ["--var-file", path]
    if args.rollback_strategy:
        options += ["--rollback-strategy", args.rollback_strategy]
    _, _, code = run_batch(
        args.experiments,
        results=args.results,
        options=options,
        timeout=args.timeout,
        quiet=args.quiet,
    )
    return code


def add_run_commands(commands: argparse._SubParsersAction) -> None:
    """Add `run`."""
    parser = commands.add_parser(
        "run",
        help="run experiments in a row; keep journal, load data, log, JUnit, report",
        description=(
            "Run each experiment with `chaos run` into DIR/YYYYMMDD_HHMMSS/<experiment>/ "
            "(journal.json, chaostoolkit.log, <load>-summary.json, <load>-series.json, "
            "junit.xml, report.html), print a summary table (also in summary.txt and "
            "summary.json) and exit with the worst verdict."
        ),
        epilog=EPILOG,
    )
    parser.add_argument("experiments", nargs="+", metavar="EXPERIMENT")
    parser.add_argument(
        "--results", default="results", metavar="DIR", help="default: ./results"
    )
    parser.add_argument(
        "--var", action="append", metavar="KEY=VALUE", help="passed to `chaos run`"
    )
    parser.add_argument(
        "--var-file", action="append", metavar="FILE", help="passed to `chaos run`"
    )
    parser.add_argument(
        "--rollback-strategy",
        choices=("default", "always", "never", "deviated"),
        help="passed to `chaos run`",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="stop an experiment (SIGINT: it rolls back) after this long (default 3600)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="do not show chaos's output (it is in the log)",
    )
    parser.set_defaults(handler=run_experiments)
