"""The ``chaospika`` command line: ``sandbox up|down|status|reset``, ``load run``, ``verdict``.

Each command group is a function adding its sub-parser to COMMAND_GROUPS;
every leaf parser sets ``handler`` (args -> exit code).
"""

import argparse
import json
import sys
from collections.abc import Callable
from types import ModuleType

from chaospika import __version__
from chaospika._secrets import redact_url
from chaospika.ledger.cli import add_cleanup_commands
from chaospika.load.cli import add_load_commands
from chaospika.sandbox.bugs import KNOWN_BUGS, parse_bugs
from chaospika.verdict.cli import add_verdict_commands

__all__ = ["COMMAND_GROUPS", "build_parser", "main"]

EXIT_NOT_RUNNING = 3


def bugs_arg(value: str) -> tuple[str, ...]:
    """argparse type: comma-separated seeded bug names."""
    try:
        return parse_bugs(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def port_arg(value: str) -> int:
    """argparse type: a TCP port."""
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port 1-65535, got {value!r}")
    return port


def count_arg(minimum: int) -> Callable[[str], int]:
    """argparse type factory: an integer >= `minimum`."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {value!r}"
            )
        return number

    return parse


def with_manager(
    handler: Callable[[ModuleType, argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Wrap a sandbox handler: import the manager lazily, report its errors (exit 1)."""

    def run(args: argparse.Namespace) -> int:
        from chaospika.sandbox import manager

        try:
            return handler(manager, args)
        except manager.SandboxError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1

    return run


def _print_summary(state: dict) -> None:
    names = [name for name in ("redis", "api", "worker") if name in state["pidfiles"]]
    pidfiles = [state["pidfiles"][name] for name in names]
    logs = [state["logs"][name] for name in names]
    redis_kind = "embedded" if state.get("redis_embedded") else "external"
    print(f"  API     {state['api_url']}")
    print(f"  WS      {state['ws_url']}")
    print(f"  Redis   {redact_url(state['redis_url'])}   ({redis_kind})")
    print(f"  DB      {redact_url(state['db_url'])}")
    print("  worker  consumer worker-<pid> of group inventory")
    print(f"  bugs    {', '.join(state['bugs']) or 'none'}")
    print(f"  pidfiles {' '.join(pidfiles)}")
    print(f"  logs    {' '.join(logs)}")


def sandbox_up(manager: ModuleType, args: argparse.Namespace) -> int:
    """`chaospika sandbox up`."""
    state = manager.up(
        args.dir,
        bugs=args.bugs,
        api_port=args.api_port,
        redis_port=args.redis_port,
        redis_url=args.redis_url,
        db_url=args.db_url,
        work_ms=args.work_ms,
        batch=args.batch,
        timeout=args.timeout,
        reset=args.reset,
    )
    running_bugs = tuple(state.get("bugs") or ())
    if (state["already_running"] or state["restarted"]) and running_bugs != args.bugs:
        print(
            f"error: the sandbox in {state['dir']} already runs with bugs "
            f"{', '.join(running_bugs) or 'none'}, not {', '.join(args.bugs) or 'none'}; "
            f"stop it first: chaospika sandbox down --dir {state['dir']}",
            file=sys.stderr,
        )
        return 1
    if state["already_running"]:
        print(f"sandbox already running at {state['api_url']} (dir {state['dir']})")
        return 0
    if state["restarted"]:
        print(f"sandbox was partly running: restarted {', '.join(state['restarted'])}")
    else:
        wiped = " (wiped the data an earlier sandbox left)" if state["wiped"] else ""
        print(f"sandbox up in {state['dir']}{wiped}")
    _print_summary(state)
    return 0


def sandbox_down(manager: ModuleType, args: argparse.Namespace) -> int:
    """`chaospika sandbox down`."""
    result = manager.down(args.dir)
    if result["stopped"]:
        print(f"sandbox stopped: {', '.join(result['stopped'])} ({result['dir']})")
    else:
        print(f"sandbox is not running ({result['dir']})")
    return 0


def sandbox_status(manager: ModuleType, args: argparse.Namespace) -> int:
    """`chaospika sandbox status`: exit 0 if every service runs, 3 otherwise."""
    result = manager.status(args.dir)
    code = 0 if result["running"] else EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return code
    if not result["services"]:
        print(f"sandbox is not running (no state in {result['dir']})")
        return code
    print(f"sandbox in {result['dir']}: {'running' if code == 0 else 'NOT running'}")
    urls = {
        "api": result.get("api_url"),
        "worker": result.get("db_url"),
        "redis": result.get("redis_url"),
    }
    for name, service in result["services"].items():
        word = "running" if service["running"] else "stopped"
        pid = service["pid"] or "-"
        print(f"  {name:<7} {word:<8} pid {pid:<8} {urls.get(name) or ''}")
    return code


def sandbox_reset(manager: ModuleType, args: argparse.Namespace) -> int:
    """`chaospika sandbox reset`."""
    result = manager.reset(args.dir)
    print(
        f"sandbox reset: deleted {result['deleted_keys']} Redis keys, recreated the "
        f"stream and its group, recreated the SQL tables ({result['dir']})"
    )
    return 0


def add_sandbox_commands(commands: argparse._SubParsersAction) -> None:
    """Add `sandbox up|down|status|reset`."""
    sandbox = commands.add_parser("sandbox", help="run the flash-sale target system")
    actions = sandbox.add_subparsers(dest="action", metavar="ACTION", required=True)
    dir_help = "state folder (default $CHAOSPIKA_SANDBOX_DIR or ~/.chaospika/sandbox)"

    up = actions.add_parser("up", help="start Redis, the order API and the worker")
    up.add_argument("--bugs", type=bugs_arg, default=(), help=", ".join(KNOWN_BUGS))
    up.add_argument("--api-port", type=port_arg, default=8731)
    up.add_argument("--redis-port", type=port_arg, default=6391)
    up.add_argument("--redis-url", help="use this Redis instead of starting one")
    up.add_argument("--db-url", help="SQLAlchemy URL (default sqlite in --dir)")
    up.add_argument("--work-ms", type=count_arg(0), default=5)
    up.add_argument("--batch", type=count_arg(1), default=20)
    up.add_argument("--timeout", type=count_arg(1), default=30)
    up.add_argument(
        "--reset",
        action="store_true",
        help="first delete the data an earlier sandbox left (its keys and tables)",
    )
    up.set_defaults(handler=with_manager(sandbox_up))

    down = actions.add_parser("down", help="stop every process of the sandbox")
    down.set_defaults(handler=with_manager(sandbox_down))

    status = actions.add_parser("status", help="exit 0 if everything runs, else 3")
    status.add_argument("--json", action="store_true", help="print state as JSON")
    status.set_defaults(handler=with_manager(sandbox_status))

    reset = actions.add_parser(
        "reset", help="empty the sandbox's Redis keys and tables"
    )
    reset.set_defaults(handler=with_manager(sandbox_reset))

    for parser in (up, down, status, reset):
        parser.add_argument("--dir", help=dir_help)


COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_sandbox_commands,
    add_load_commands,
    add_verdict_commands,
    add_cleanup_commands,
]


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every `chaospika` command."""
    parser = argparse.ArgumentParser(
        prog="chaospika", description="chaostoolkit-pika helpers"
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_commands in COMMAND_GROUPS:
        add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `chaospika` with `argv`; return the exit code."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
