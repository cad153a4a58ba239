"""Redis faults (flush, pause, kill clients, stop, slow) with the actions ending them
early, and actions on a stream's consumer group (wait until drained, or mid-work).

Every fault is recorded in the fault ledger before it is applied; its undo (in the
private module beside it: `_snapshot`, `_pause`, `_server`, `_slow`) is safe to
run twice, and is what the safety control and `chaospika cleanup` run.
"""

from chaoslib.types import Configuration, Secrets

from chaospika.redis import _kill, _pause, _server, _slow, _snapshot, _streams

__all__ = [
    "flush_keys",
    "kill_clients",
    "pause_clients",
    "restore_flushed_keys",
    "slow_redis",
    "start_server",
    "stop_server",
    "stop_slow_redis",
    "unpause_clients",
    "wait_for_busy_consumer",
    "wait_for_drain",
]


def wait_for_drain(
    redis_url: str,
    stream: str,
    group: str,
    timeout: float = 30,
    interval: float = 0.2,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Wait until `group` has no lag and nothing pending on `stream`.

    That is, its consumers received and acknowledged every entry. Polls every
    `interval` and fails after `timeout` (seconds or "30s") with the backlog
    left. Returns {"drained": true, "drain_seconds", "backlog_at_start", ...}.
    To measure a drain that may not happen, use the probe `time_to_drain`.
    """
    return _streams.drain(redis_url, stream, group, timeout, interval, secrets=secrets)


def wait_for_busy_consumer(
    redis_url: str,
    stream: str,
    group: str,
    busy_for: float = 0.05,
    min_lag: int = 1,
    timeout: float = 30,
    interval: float = 0.005,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Wait for the moment a crash hurts: every consumer of `group` is mid-batch.

    That is, no consumer has read from `stream` for at least `busy_for` (seconds or "50ms") while at
    least `min_lag` entries wait for the group: each one holds a batch it is
    still working on. Put it right before a fault. Fails after `timeout` (the
    fault would hit an idle target). Returns {"consumer", "busy_ms", "pending",
    "lag", "consumer_count", "waited_seconds"}.
    """
    return _streams.busy_consumers(
        redis_url, stream, group, busy_for, min_lag, timeout, interval, secrets=secrets
    )


def flush_keys(
    redis_url: str,
    pattern: str = "*",
    max_keys: int = 10000,
    max_bytes: int = 256 * 1024 * 1024,
    force: bool = False,
    ttl: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Delete the keys matching `pattern` ("*": the whole db) from the db of `redis_url`.

    Every key is saved first (DUMP, which keeps its type, and its PTTL) in a
    snapshot beside the fault ledger; the undo (`restore_flushed_keys`, the
    safety control, `chaospika cleanup`) RESTOREs each key exactly, with the TTL
    it had left minus the time spent (a key whose TTL ran out stays gone), and
    is safe to run twice. Deletion is atomic per chunk of keys and spares keys
    changed concurrently from being half-saved: an order placed meanwhile is
    either in the snapshot or after the flush. Keys created after the scan are
    left. Refuses, deleting nothing, more than `max_keys` keys or `max_bytes` of
    DUMP payload unless `force` is true. With `ttl` (seconds or "5m") a detached
    watchdog restores the keys once the ttl has passed and no Chaos Toolkit
    process is left to do it. Returns {"fault", "flushed_count",
    "snapshot_bytes", "snapshot" (the file), "changed_count", "vanished_count",
    "flush_seconds", ...}.
    """
    return _snapshot.flush(
        redis_url, pattern, max_keys, max_bytes, force, ttl, secrets=secrets
    )


def restore_flushed_keys(
    redis_url: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Put back now the keys this run's `flush_keys` took from the db of `redis_url`.

    Undoes, through the ledger, every flush of this run on that URL still in
    force (the same `redis_url` as the flush's); nothing to do is not an error.
    Returns {"restored_count", "expired_count" (TTL ran out meanwhile),
    "replaced_count" (a key of that name had been written again), "faults"}.
    """
    return _snapshot.restore_flushed(redis_url, secrets=secrets)


def pause_clients(
    redis_url: str,
    duration: float,
    mode: str = "all",
    ttl: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """CLIENT PAUSE the server of `redis_url` for `duration` (seconds or "5s", <= 600 s).

    `mode` "write" holds the commands that write (reads go on) and can be ended
    early (`unpause_clients`, the ledger's undo); "all" holds every command,
    CLIENT UNPAUSE included, so it cannot be ended early: its undo waits for its
    expiry. The pause ends by itself after `duration` either way. With `ttl`
    (mode "write" only) a detached watchdog ends it once the ttl has passed and
    no Chaos Toolkit process is left. Returns {"fault", "mode",
    "duration_seconds", "until" (epoch seconds), "can_end_early", "undo"}.
    """
    return _pause.pause(redis_url, duration, mode, ttl, secrets=secrets)


def unpause_clients(
    redis_url: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """End a pause WRITE of the server of `redis_url` now (CLIENT UNPAUSE).

    A recorded pause ALL still in force cannot be ended (CLIENT UNPAUSE would
    wait for it): {"unpaused": false, "pause_all_until", "reason"}. Otherwise
    {"unpaused": true, "faults": [the pause records marked undone]}.
    """
    return _pause.unpause(redis_url, secrets=secrets)


def kill_clients(
    redis_url: str,
    client_type: str = "normal",
    addr: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Drop the client connections of the server of `redis_url` (CLIENT KILL).

    Those of `client_type` (normal, pubsub, replica or master), and only those
    from `addr` ("ip:port", or "ip" for all its connections) if given; never
    this action's own connection. Cannot be undone (clients reconnect by
    themselves): recorded in the ledger, then marked over at once. Returns
    {"fault", "killed_count", "client_type", "addr", "undoable": false}.
    """
    return _kill.kill(redis_url, client_type, addr, secrets=secrets)


def stop_server(
    redis_url: str,
    pidfile: str = None,
    start_command: list = None,
    stop_command: list = None,
    container: str = None,
    docker_url: str = None,
    how: str = None,
    save: bool = False,
    timeout: float = 10.0,
    ttl: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Stop the Redis server of `redis_url`; its undo starts it again.

    The way back is one of: `pidfile` (a server started from the command
    recorded in ``<pidfile>.cmd.json``, as the sandbox's is; the server must run
    as that pid), `start_command` (an argv list), or `container` (the exact name
    of the running Docker container the server runs in, on the local engine
    `docker_url`: a unix socket or loopback TCP; the sandbox's is
    chaospika-sandbox-redis-<port>). `how`: "shutdown" (SHUTDOWN NOSAVE, or SAVE
    if `save`; the default), "sigterm"/"sigkill" (needs `pidfile`) or "command"
    (runs `stop_command`, the default when it is given); for a container "stop"
    (docker stop: SIGTERM, SIGKILL after `timeout`; the default) or "kill"
    (SIGKILL). A container whose processes do not include the server is refused;
    one stopped while `redis_url` still answers fails the action (its undo
    starts the container again). Waits up to `timeout` for the server to be
    gone. With `ttl` (seconds or "5m") a detached watchdog starts it again once
    the ttl has passed and no Chaos Toolkit process is left. A server that does
    not answer is not stopped: {"stopped": false, "reason"}. Returns {"fault",
    "stopped", "how", "pid", "container"?, "stop_seconds", "undo"}.
    """
    return _server.stop(
        redis_url,
        pidfile,
        start_command,
        stop_command,
        how,
        save,
        timeout,
        ttl,
        secrets=secrets,
        container=container,
        docker_url=docker_url,
    )


def start_server(
    redis_url: str,
    pidfile: str = None,
    start_command: list = None,
    container: str = None,
    docker_url: str = None,
    timeout: float = 10.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Start the Redis server of `redis_url` unless it answers; wait until it does.

    From `pidfile` (its recorded command), `start_command`, or `container` (the
    Docker container it runs in, on the local engine `docker_url`); with none,
    from the newest `stop_server` of that URL in the ledger. Marks the stops of
    that URL undone. Waits up to `timeout` for PING. Returns {"started",
    "already_running"?, "pid"?, "container"?, "start_seconds", "faults"}.
    """
    return _server.start(
        redis_url,
        pidfile,
        start_command,
        timeout,
        secrets=secrets,
        container=container,
        docker_url=docker_url,
    )


def slow_redis(
    redis_url: str,
    duration: float,
    sleep_ms: float = 100,
    interval: float = 0.1,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Make the server of `redis_url` stall: DEBUG SLEEP `sleep_ms`, every `interval`.

    For `duration` (seconds or "10s", <= 1 h) from the moment the loop runs
    (the action returns then), from a detached process that stops by itself at
    the end of `duration`, even if Chaos Toolkit is killed;
    every client waits up to `sleep_ms` per stall. Needs a server started with
    ``--enable-debug-command local`` (Redis >= 7 refuses DEBUG otherwise; the
    error names the flag). The undo (`stop_slow_redis`, the ledger) stops the
    loop early. Returns {"fault", "pid", "duration_seconds", "sleep_ms",
    "interval_seconds", "until", "log", "undo"}.
    """
    return _slow.slow(redis_url, duration, sleep_ms, interval, secrets=secrets)


def stop_slow_redis(
    redis_url: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Stop now the `slow_redis` loops of `redis_url` still in force (any run).

    Returns {"stopped_count", "faults"}; nothing to stop is not an error.
    """
    return _slow.stop_all(redis_url)
