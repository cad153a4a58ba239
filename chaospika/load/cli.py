"""`chaospika load run SPEC`: the load engine from the shell, with k6's exit codes.

Like k6, the first SIGINT or SIGTERM stops the run (worker processes too),
prints the summary and exits 105; a second one exits at once. A run that has
not ended EXIT_GRACE seconds after its time limit is ended by a watchdog.
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading
from types import FrameType

__all__ = [
    "EXIT_INVALID_CONFIG",
    "EXIT_SIGNAL",
    "EXIT_STUCK",
    "EXIT_THRESHOLDS_FAILED",
    "add_load_commands",
]

EXIT_THRESHOLDS_FAILED = 99  # k6: thresholds have been crossed
EXIT_STUCK = 103  # k6's generic engine error: the run overran its time limit
EXIT_INVALID_CONFIG = 104  # k6: invalid configuration
EXIT_SIGNAL = 105  # k6: stopped by an external signal
EXIT_GRACE = 30.0  # seconds past the run's time limit before the watchdog ends it
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def load_run(args: argparse.Namespace) -> int:
    """Run the spec to its end, print k6's summary; 99 if a threshold failed."""
    from chaospika.load.runner import run_deadline
    from chaospika.load.session import LoadSession, load_spec_file

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        session = LoadSession(args.name, load_spec_file(args.spec), args.max_duration)
        limit = run_deadline(session.load, args.max_duration)
    except (OSError, ValueError) as error:
        print(f"error: invalid load spec: {error}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    signalled: list[int] = []
    previous = _install_handlers(session, signalled)
    _start_watchdog(limit + EXIT_GRACE, session.done)
    try:
        result = session.run()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    print(result.summary_text)
    if args.summary_export:
        with open(args.summary_export, "w") as handle:
            json.dump(result.summary_export, handle, indent=2)
    if signalled:
        return EXIT_SIGNAL
    return 0 if result.thresholds_passed else EXIT_THRESHOLDS_FAILED


def _install_handlers(session: "object", signalled: list[int]) -> dict:
    """SIGINT/SIGTERM: stop the run (first), exit now (second); old handlers back."""

    def on_signal(number: int, frame: FrameType | None) -> None:
        signalled.append(number)
        if len(signalled) == 1:
            os.write(2, b"stopping the load (signal again to exit now)\n")
            session.request_stop()  # type: ignore[attr-defined]
        else:
            os.write(2, b"exiting now\n")
            os._exit(EXIT_SIGNAL)  # worker processes die with their parent

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for number in _SIGNALS:
            previous[number] = signal.signal(number, on_signal)
    return previous


def _start_watchdog(seconds: float, done: threading.Event) -> None:
    """End the process if the run has not ended `seconds` from now."""

    def watch() -> None:
        if not done.wait(seconds):
            os.write(
                2, f"error: the load overran its limit of {seconds:g} s\n".encode()
            )
            os._exit(EXIT_STUCK)

    threading.Thread(target=watch, name="load-watchdog", daemon=True).start()


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
