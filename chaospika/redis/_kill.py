"""Drop client connections of a Redis server (CLIENT KILL): over as soon as done.

Nothing can be put back: a dropped connection is gone, and well-behaved clients
reconnect by themselves. The kill is recorded in the fault ledger before it is
applied (with no undo), then marked over at once, so that it shows in the
journal's ``pika_faults`` but never as a fault left in force. The connection
sending the kill is kept (SKIPME yes).
"""

import logging
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets

from chaospika import ledger
from chaospika._validate import require_choice, require_text
from chaospika.redis import _conn

__all__ = ["CLIENT_TYPES", "kill"]

logger = logging.getLogger("chaostoolkit")

KIND = "redis.kill_clients"
CLIENT_TYPES = ("normal", "pubsub", "replica", "master")
IRREVERSIBLE = "dropped connections cannot be restored; clients reconnect themselves"


def _split(addr: str) -> tuple[str, str | None]:
    """("ip", "port") of "ip:port" or "[ipv6]:port"; ("ip", None) of a bare address."""
    text = addr.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    if not host or (port is not None and not port.isdigit()):
        raise ActivityFailed(
            f"argument 'addr' must be ip, ip:port or [ipv6]:port, got {addr!r}"
        )
    return host, port


def kill(
    redis_url: str, client_type: Any, addr: Any, secrets: Secrets = None
) -> dict[str, Any]:
    """CLIENT KILL the connections of `client_type` (and of `addr`, if given)."""
    kind = require_choice("client_type", client_type, CLIENT_TYPES)
    host = port = None
    if addr is not None:
        host, port = _split(require_text("addr", addr))
    target = _conn.describe(redis_url, client_type=kind, addr=addr)
    with _conn.connected(redis_url, secrets=secrets, timeout=5.0) as client:
        client.ping()
        fault = ledger.record(KIND, target, None)
        if host is None:
            killed = int(client.client_kill_filter(_type=kind, skipme=True))
        else:
            me = int(client.client_id())
            victims = [
                entry["id"]
                for entry in client.client_list(_type=kind)
                if int(entry["id"]) != me
                and entry["addr"].rsplit(":", 1)[0].strip("[]") == host
                and (port is None or entry["addr"].rsplit(":", 1)[1] == port)
            ]
            killed = sum(  # 0 for a client that left meanwhile
                int(client.client_kill_filter(_id=victim, skipme=True))
                for victim in victims
            )
    ledger.applied(fault, killed_count=killed, irreversible=IRREVERSIBLE)
    _conn.close(fault, f"over at once: {IRREVERSIBLE}")
    logger.info(
        "killed %d %s client connection(s) of %s%s",
        killed,
        kind,
        target["url"],
        f" from {addr}" if addr else "",
    )
    return {
        "fault": fault.id,
        "killed_count": killed,
        "client_type": kind,
        "addr": addr,
        "undoable": False,
        "undo": f"none: {IRREVERSIBLE}",
    }
