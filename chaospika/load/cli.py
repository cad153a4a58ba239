"""`chaospika load run SPEC`: the load engine from the shell, with k6's exit codes."""

import argparse
import json
import logging
import sys

__all__ = ["EXIT_INVALID_CONFIG", "EXIT_THRESHOLDS_FAILED", "add_load_commands"]

EXIT_THRESHOLDS_FAILED = 99  # k6: thresholds have been crossed
EXIT_INVALID_CONFIG = 104  # k6: invalid configuration


def load_run(args: argparse.Namespace) -> int:
    """Run the spec to its end, print k6's summary; 99 if a threshold failed."""
    from chaospika.load.session import LoadSession, load_spec_file

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        session = LoadSession(args.name, load_spec_file(args.spec), args.max_duration)
    except (OSError, ValueError) as error:
        print(f"error: invalid load spec: {error}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    result = session.run()
    print(result.summary_text)
    if args.summary_export:
        with open(args.summary_export, "w") as handle:
            json.dump(result.summary_export, handle, indent=2)
    return 0 if result.thresholds_passed else EXIT_THRESHOLDS_FAILED


def add_load_commands(commands: argparse._SubParsersAction) -> None:
    """Add `load run`."""
    load = commands.add_parser("load", help="run the k6-like load engine")
    actions = load.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="run a JSON load spec (exit 99: thresholds)")
    run.add_argument("spec", help="path of the JSON spec (k6's options shape)")
    run.add_argument("--name", default="load", help="name of the run in the logs")
    run.add_argument("--summary-export", help="write k6's summary-export JSON here")
    run.add_argument("--max-duration", type=float, help="hard cap in seconds")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.set_defaults(handler=load_run)
