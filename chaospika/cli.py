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
from chaospika.network.cli import add_proxy_commands
from chaospika.report.cli import add_report_commands
from chaospika.run.cli import add_run_commands
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


def seconds_arg(value: str) -> float:
    """argparse type: seconds, > 0 and <= 60."""
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number <= 60:
        raise argparse.ArgumentTypeError(
            f"expected seconds > 0 and <= 60, got {value!r}"
        )
    return number


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
    names = [
        name
        for name in ("redis", "proxy", "api", "worker")
        if name in state["pidfiles"]
    ]
    pidfiles = [state["pidfiles"][name] for name in names]
    logs = [state["logs"][name] for name in names]
    redis_kind = "embedded" if state.get("redis_embedded") else "external"
    if state.get("redis_container"):
        redis_kind = f"container {state['redis_container']}"
    print(f"  API     {state['api_url']}")
    print(f"  WS      {state['ws_url']}")
    print(f"  Redis   {redact_url(state['redis_url'])}   ({redis_kind})")
    if state.get("proxy_url"):
        print(
            f"  proxy   {state['proxy_url']}   (proxy {state['proxy_name']!r}: "
            f"the API uses {redact_url(state['api_redis_url'])})"
        )
        if state.get("proxied_api_url"):
            print(
                f"  proxied {state['proxied_ws_url']}   (proxy 'api' in front of "
                "the API, for client-side faults)"
            )
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
        proxy=args.proxy,
        proxy_port=args.proxy_port,
        proxy_redis_port=args.proxy_redis_port,
        proxy_api_port=args.proxy_api_port,
        redis_timeout=args.redis_timeout,
        redis_container=args.redis_container,
        docker_url=args.docker_url,
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
    if (state["already_running"] or state["restarted"]) and bool(
        state.get("proxy_url")
    ) != bool(args.proxy):
        with_or_without = "with" if state.get("proxy_url") else "without"
        print(
            f"error: the sandbox in {state['dir']} already runs {with_or_without} "
            f"the proxy; stop it first: chaospika sandbox down --dir {state['dir']}",
            file=sys.stderr,
        )
        return 1
    if (state["already_running"] or state["restarted"]) and bool(
        state.get("redis_container")
    ) != bool(args.redis_container):
        with_or_without = "with" if state.get("redis_container") else "without"
        print(
            f"error: the sandbox in {state['dir']} already runs {with_or_without} "
            f"a Redis container; stop it first: chaospika sandbox down --dir {state['dir']}",
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
    container = result.get("redis_container")
    if container and container["removed"]:
        print(f"removed the Redis container {container['container']}")
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
        "proxy": result.get("proxy_url"),
    }
    for name, service in result["services"].items():
        word = "running" if service["running"] else "stopped"
        where = f"pid {service['pid'] or '-':<8}"
        if service.get("container"):
            where = f"container {service['container']}"
        print(f"  {name:<7} {word:<8} {where} {urls.get(name) or ''}")
        if service.get("error"):
            print(f"          {service['error']}")
    if result.get("proxy_url"):
        print(f"  the API reaches Redis through {redact_url(result['api_redis_url'])}")
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
    own_redis = up.add_mutually_exclusive_group()
    own_redis.add_argument("--redis-url", help="use this Redis instead of starting one")
    own_redis.add_argument(
        "--redis-container",
        action="store_true",
        help="run the sandbox's Redis in a Docker container (on --redis-port)",
    )
    up.add_argument(
        "--docker-url",
        help="Docker engine for --redis-container (default $DOCKER_HOST or the socket)",
    )
    up.add_argument("--db-url", help="SQLAlchemy URL (default sqlite in --dir)")
    up.add_argument("--work-ms", type=count_arg(0), default=5)
    up.add_argument("--batch", type=count_arg(1), default=20)
    up.add_argument("--timeout", type=count_arg(1), default=30)
    up.add_argument(
        "--proxy",
        action="store_true",
        help="run the fault proxy: 'redis' between the API and Redis, 'api' before the API",
    )
    up.add_argument(
        "--proxy-port", type=port_arg, default=8732, help="the proxy's HTTP API"
    )
    up.add_argument(
        "--proxy-redis-port",
        type=port_arg,
        default=6392,
        help="where the proxy 'redis' listens",
    )
    up.add_argument(
        "--proxy-api-port",
        type=port_arg,
        default=8733,
        help="where the proxy 'api' (in front of the API) listens",
    )
    up.add_argument(
        "--redis-timeout",
        type=seconds_arg,
        default=0.5,
        help="seconds the API waits on each Redis operation (default 0.5)",
    )
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
    add_run_commands,
    add_report_commands,
    add_proxy_commands,
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
