"""`chaospika proxy`: the fault proxy as a standalone server, outside any experiment.

::

    chaospika proxy [--listen 127.0.0.1:8474] [--config proxies.json] [--allow-host P]
                    [--relay-nice N]

The config is Toxiproxy's ``-config`` file: a JSON list of proxies
(``[{"name": "redis", "listen": "127.0.0.1:6392", "upstream": "127.0.0.1:6379"}]``).
It serves Toxiproxy's HTTP API on ``--listen`` until SIGINT/SIGTERM, so
toxiproxy-cli, the Toxiproxy clients and chaospika's network activities drive it.
"""

import argparse

from chaospika.network.priority import RELAY_NICE

__all__ = ["add_proxy_commands", "run_proxy"]


def run_proxy(args: argparse.Namespace) -> int:
    """Serve until a signal; 2 on a bad address or config (the server's own codes)."""
    from chaospika.network.server import main

    argv = ["--listen", args.listen]
    if args.config:
        argv += ["--config", args.config]
    for pattern in args.allow_host:
        argv += ["--allow-host", pattern]
    if args.relay_nice is not None:
        argv += ["--relay-nice", str(args.relay_nice)]
    return main(argv)


def add_proxy_commands(commands: argparse._SubParsersAction) -> None:
    """Add `proxy`."""
    parser = commands.add_parser(
        "proxy",
        help="run the TCP fault proxy (Toxiproxy's API) from a Toxiproxy config",
        description=(
            "A TCP fault proxy with Toxiproxy's HTTP API. The proxies of --config "
            "(Toxiproxy's -config format: a JSON list of {name, listen, upstream, "
            "enabled}) are created at start; more can be added through the API."
        ),
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8474", help="API address (default %(default)s)"
    )
    parser.add_argument(
        "--config", "-config", metavar="FILE", help="JSON list of proxies to create"
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="PATTERN",
        help="also listen on / connect to this CIDR or host glob (default: loopback)",
    )
    parser.add_argument(
        "--relay-nice",
        type=int,
        metavar="N",
        help=f"nice value of the relaying thread when permitted (default {RELAY_NICE}; "
        "0 keeps the usual priority)",
    )
    parser.set_defaults(handler=run_proxy)
