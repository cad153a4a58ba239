"""`chaospika load run SPEC`: the load engine from the shell, with k6's exit codes.

Exit codes are k6's: 0, 99 (thresholds crossed), 104 (invalid configuration),
105 (stopped by a signal, after the summary and the exports are written). Like
k6, the first SIGINT or SIGTERM stops the run (worker processes too), prints
the summary and exits 105; a second one exits at once. A run that has not
ended EXIT_GRACE seconds after its time limit is ended by a watchdog.

k6's flags: -e/--env KEY=VALUE (seen by {{env.KEY}}), --vus, --duration,
--iterations, --stage DURATION:TARGET (they replace the scenarios, as in k6; see
shortcuts.py), --out json=FILE / csv=FILE (k6's formats, see output.py),
--no-thresholds, --summary-export FILE, --summary-json FILE (what a k6 script's
handleSummary(data) gets, as JSON).

Progress: once a second, k6's "running (12.0s), 10/10 VUs, 97 complete and 0
interrupted iterations" followed by iterations/s, requests/s, the p(95) of
http_req_duration over the last second and the failures so far (progress.py),
on stderr: rewritten in place on a terminal (wrapped to its width), one line a
second otherwise; nothing with --quiet.
"""

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
from types import FrameType
from typing import TextIO

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
    signalled: list[int] = []
    holder: dict = {}
    previous = _install_handlers(holder, signalled)  # first: no traceback on Ctrl-C
    try:
        return _load_run(args, holder, signalled)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _prepare(args: argparse.Namespace) -> tuple:
    """(session, time limit, sample outputs); ValueError/OSError: exit 104."""
    from chaospika.load.session import LoadSession, load_spec_file
    from chaospika.loadengine import open_output, override, parse_out, run_deadline

    for item in args.env or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"-e/--env {item!r}: expected KEY=VALUE")
        os.environ[key] = value  # read by {{env.KEY}} in this process and workers
    outputs = [parse_out(value) for value in args.out or ()]
    spec = override(
        load_spec_file(args.spec),
        vus=args.vus,
        duration=args.duration,
        iterations=args.iterations,
        stages=args.stage,
    )
    if args.no_thresholds:
        spec.pop("thresholds", None)
    session = LoadSession(
        args.name,
        spec,
        args.max_duration,
        log_summary=False,
        show_progress=ProgressLine(sys.stderr, quiet=args.quiet),
    )
    limit = run_deadline(session.load, args.max_duration)
    if outputs and (session.load.processes > 1 or session.load.engine != "pika"):
        raise ValueError(
            "--out needs one process and the pika engine (processes: 1, engine: pika)"
        )
    sources: dict[str, list[str]] = {}
    for threshold in session.load.thresholds:
        sources.setdefault(threshold.metric, []).append(threshold.source)
    opened = []
    for kind, path in outputs:  # each output wraps the previous one's recording
        opened.append(open_output(kind, path, sources))
        opened[-1].attach(session.run_handle.registry)
    return session, limit, opened


def _load_run(args: argparse.Namespace, holder: dict, signalled: list[int]) -> int:
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        session, limit, outputs = _prepare(args)
    except (OSError, ValueError) as error:
        print(f"error: invalid load spec: {error}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    holder["session"] = session
    if signalled:  # a signal came while the spec was read: stop at once, like k6
        session.request_stop()
    _start_watchdog(limit + EXIT_GRACE, session.done)
    try:
        result = session.run()
    finally:
        session.show_progress.end()
        for output in reversed(outputs):
            output.close()
    print(result.summary_text, flush=True)
    if args.summary_export:
        with open(args.summary_export, "w") as handle:
            json.dump(result.summary_export, handle, indent=2)
    if args.summary_json:
        from chaospika.loadengine import summary_data

        data = summary_data(
            result.registry,
            result.thresholds,
            result.duration_s,
            trend_stats=session.load.summary_trend_stats,
            time_unit=session.load.summary_time_unit,
        )
        with open(args.summary_json, "w") as handle:
            json.dump(data, handle, indent=2)
    if signalled:
        name = "interrupt" if signalled[0] == signal.SIGINT else "terminated"
        print(  # k6's last words, as Go names the signal
            f"error: test run was aborted because it received a '{name}' signal",
            file=sys.stderr,
        )
        return EXIT_SIGNAL
    if args.no_thresholds:
        return 0
    if result.thresholds_passed:
        return 0
    crossed = sorted(
        metric
        for metric, verdicts in result.thresholds.items()
        if not all(verdicts.values())
    )
    print(  # k6's words
        f"error: thresholds on metrics '{', '.join(crossed)}' have been crossed",
        file=sys.stderr,
    )
    return EXIT_THRESHOLDS_FAILED


class ProgressLine:
    """Shows the progress reports: in place on a terminal, a line each otherwise.

    On a terminal the report is rewritten in place, wrapped at commas into as
    many rows as the width needs (k6 rewrites its bars the same way).
    """

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.rows = 0  # rows of the report on the terminal, the last one open
        self.warned = False  # the saturation warning, once per run on a terminal

    def __call__(self, progress: dict) -> None:
        """Show one report (nothing when quiet)."""
        from chaospika.loadengine import progress_line, progress_parts, wrap_parts

        if self.quiet:
            return
        if not self.tty:
            self.stream.write(progress_line(progress) + "\n")
            self.stream.flush()
            return
        width = max(shutil.get_terminal_size().columns - 1, 20)
        rows = wrap_parts(progress_parts(progress), width)
        text = f"\x1b[{self.rows - 1}A" if self.rows > 1 else ""
        text += "\r\x1b[J"  # back to the report's first row, cleared to the end
        warning = progress.get("warning")
        if warning and not self.warned:  # on its own row, kept
            self.warned = True
            text += f"WARNING {warning}\n"
        self.stream.write(text + "\n".join(rows))
        self.stream.flush()
        self.rows = len(rows)

    def end(self) -> None:
        """End the report left open on a terminal."""
        if self.rows:
            self.stream.write("\n")
            self.stream.flush()
            self.rows = 0


def _install_handlers(holder: dict, signalled: list[int]) -> dict:
    """SIGINT/SIGTERM: stop the run (first), exit now (second); old handlers back."""

    def on_signal(number: int, frame: FrameType | None) -> None:
        signalled.append(number)
        if len(signalled) == 1:
            os.write(2, b"stopping the load (signal again to exit now)\n")
            session = holder.get("session")
            if session is not None:  # else: stopped as soon as it exists
                session.request_stop()
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
    """Add `load run` and `load k6-operator`."""
    load = commands.add_parser("load", help="run the k6-like load engine")
    actions = load.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="run a JSON load spec (exit 99: thresholds)")
    run.add_argument("spec", help="path of the JSON spec (k6's options shape)")
    run.add_argument("--name", default="load", help="name of the run in the logs")
    run.add_argument("--summary-export", help="write k6's summary-export JSON here")
    run.add_argument(
        "--summary-json",
        metavar="FILE",
        help="write the data k6 hands to handleSummary() (JSON.stringify(data))",
    )
    run.add_argument("--max-duration", type=float, help="hard cap in seconds")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument(
        "-e",
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="set an environment variable for {{env.KEY}} (k6's -e)",
    )
    run.add_argument("--vus", type=int, help="number of VUs (k6's --vus)")
    run.add_argument("--duration", help="test duration, e.g. 30s (k6's --duration)")
    run.add_argument(
        "--iterations", type=int, help="iterations shared by the VUs (k6's flag)"
    )
    run.add_argument(
        "--stage",
        action="append",
        metavar="DURATION:TARGET",
        help="a ramping-vus stage, repeatable (k6's --stage 30s:10)",
    )
    run.add_argument(
        "--out",
        action="append",
        metavar="json=FILE|csv=FILE",
        help="write every sample to FILE as k6's JSON lines or CSV (repeatable)",
    )
    run.add_argument(
        "--no-thresholds",
        action="store_true",
        help="do not judge the thresholds (exit 0 whatever they say)",
    )
    run.set_defaults(handler=load_run)
    from chaospika.loadengine import add_operator_command

    add_operator_command(actions)  # load k6-operator SPEC --parallelism N
