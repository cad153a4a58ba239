"""The redis faults the safety control knows (see chaospika.controls._faults).

Each is aimed at the server of its ``redis_url`` argument, whose host must be in
the control's ``allow_hosts`` (loopback by default).
"""

from chaospika.controls._faults import FaultKind, register_fault, url_targets

__all__: list[str] = []

_ACTIONS = "chaospika.redis.actions"
_URL = url_targets("redis_url")

register_fault(
    f"{_ACTIONS}.flush_keys",
    FaultKind(
        "redis.flush",
        _URL,
        undo="RESTORE ... REPLACE of every saved key with the TTL it has left, "
        "from the ledger's snapshot (restore_flushed_keys)",
    ),
)
register_fault(
    f"{_ACTIONS}.pause_clients",
    FaultKind(
        "redis.pause",
        _URL,
        undo="ends by itself after its duration; a pause WRITE ends early with "
        "CLIENT UNPAUSE, a pause ALL cannot (its undo waits for the expiry)",
    ),
)
register_fault(
    f"{_ACTIONS}.kill_clients",
    FaultKind(
        "redis.kill_clients",
        _URL,
        undo="none: dropped connections are not restored, clients reconnect",
    ),
)
register_fault(
    f"{_ACTIONS}.stop_server",
    FaultKind(
        "redis.stop",
        _URL,
        undo="start the server again (recorded command or start_command), "
        "wait for PING (start_server)",
    ),
)
register_fault(
    f"{_ACTIONS}.slow_redis",
    FaultKind(
        "redis.slow",
        _URL,
        undo="stop the DEBUG SLEEP loop (stop_slow_redis); it also stops by "
        "itself at the end of its duration",
    ),
)
