"""Connections and ledger bookkeeping shared by the Redis faults.

* `open_client`: a client of `redis_url` with a bounded socket timeout and no
  automatic retries. redis-py retries a command that timed out or lost its
  connection (three times by default since 6.0); for a fault that would send a
  DEL, a RESTORE, a CLIENT KILL or a DEBUG SLEEP again, and turn a probe's timeout
  into several. `binary` keeps replies as bytes (DUMP payloads, binary key names).
* `undo_url`: the URL an undo needs when no secrets are at hand (`chaospika
  cleanup`, the ttl watchdog): a password taken from the secrets is put in it. The
  ledger file holding it is readable by its owner only (mode 0600 in a 0700
  folder); journals only ever get `describe`, which masks it.
* `describe`: the target of a fault as the ledger and journals show it.
* `set_undo_args` / `close`: update a ledger record the fault wrote just before
  (the undo needs a path or pid known only once the record exists; a refused or
  instantaneous fault is over at once).
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import redis
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from redis.backoff import NoBackoff
from redis.retry import Retry

from chaospika._clients import REDIS_PASSWORD, redis_client
from chaospika._secrets import redact_text, redact_url, secret_lookup
from chaospika.ledger import store
from chaospika.ledger.records import Fault

__all__ = [
    "UNREACHABLE",
    "close",
    "connected",
    "describe",
    "open_client",
    "set_undo_args",
    "undo_url",
]

UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def open_client(
    redis_url: str,
    secrets: Secrets = None,
    timeout: float = 10.0,
    binary: bool = False,
    arg: str = "redis_url",
) -> redis.Redis:
    """A client of `redis_url`: `timeout` per command, never a retry.

    Validation, secrets and the ``redis_password`` secret as in
    `chaospika._clients.redis_client`.
    """
    redis_client(redis_url, arg=arg, secrets=secrets).close()  # checks, secrets
    options: dict[str, Any] = {}
    password = secret_lookup(secrets, REDIS_PASSWORD)
    if password is not None and not urlsplit(redis_url.strip()).password:
        options["password"] = password
    return redis.Redis.from_url(
        redis_url.strip(),
        decode_responses=not binary,
        socket_timeout=timeout,
        socket_connect_timeout=min(3.0, timeout),
        retry=Retry(NoBackoff(), 0),
        **options,
    )


def where(client: redis.Redis) -> str:
    """host:port (or socket path) of `client`, for messages."""
    options = client.connection_pool.connection_kwargs
    place = options.get("path") or f"{options.get('host')}:{options.get('port')}"
    return redact_url(place)


@contextmanager
def connected(
    redis_url: str,
    secrets: Secrets = None,
    timeout: float = 10.0,
    binary: bool = False,
) -> Iterator[redis.Redis]:
    """Yield `open_client(...)`; Redis errors become ActivityFailed naming the server."""
    client = open_client(redis_url, secrets=secrets, timeout=timeout, binary=binary)
    try:
        yield client
    except UNREACHABLE as error:
        raise ActivityFailed(
            f"cannot reach Redis at {where(client)}: {redact_text(error)}"
        ) from None
    except redis.exceptions.RedisError as error:
        raise ActivityFailed(
            f"Redis at {where(client)} answered: {redact_text(error)}"
        ) from None
    finally:
        client.close()


def database(client: redis.Redis) -> int:
    """The db number `client` selects (from the URL's /N or ?db=N)."""
    return int(client.connection_pool.connection_kwargs.get("db") or 0)


def describe(redis_url: str, **extra: Any) -> dict[str, Any]:
    """The target of a fault: URL without password, host, port, db, and `extra`."""
    parsed = urlsplit(redis_url.strip())
    try:
        port = parsed.port
    except ValueError:
        port = None
    path = "" if parsed.scheme == "unix" else parsed.path.strip("/")
    db = dict(parse_qsl(parsed.query)).get("db") or path or "0"
    return {
        "url": redact_url(redis_url.strip()),
        "host": parsed.hostname,
        "port": port,
        "db": int(db) if str(db).isdigit() else db,
        **extra,
    }


def undo_url(redis_url: str, secrets: Secrets = None) -> str:
    """`redis_url` with the secret ``redis_password`` in it when it has none.

    An undo may run in `chaospika cleanup` or the ttl watchdog, which have no
    secrets: the password has to travel with the undo.
    """
    url = redis_url.strip()
    password = secret_lookup(secrets, REDIS_PASSWORD)
    parsed = urlsplit(url)
    if password is None or parsed.password:
        return url
    if parsed.scheme == "unix":
        query = dict(parse_qsl(parsed.query))
        if query.get("password"):
            return url
        query["password"] = password
        return f"unix://{parsed.netloc}{parsed.path}?{urlencode(query)}"
    user = quote(parsed.username or "", safe="")
    host = parsed.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parsed._replace(netloc=netloc))


def set_undo_args(fault: Fault, **args: Any) -> None:
    """Add `args` to the undo arguments of the record `fault` (written just before)."""
    with store.locked(fault.id):
        data = store.load(fault.id)
        if data is None or not data.get("undo"):
            raise ActivityFailed(f"ledger: no undo recorded for fault {fault.id}")
        data["undo"].setdefault("args", {}).update(args)
        store.save(data)
    fault.data["undo"].setdefault("args", {}).update(args)


def close(fault: Fault, how: str, **details: Any) -> None:
    """Mark `fault` undone because nothing of it is in force (`how` says why)."""
    with store.locked(fault.id):
        data = store.load(fault.id)
        if data is None or data.get("state") == "undone":
            return
        data.update(state="undone", undone_at=time.time(), undone_by=how, **details)
        store.save(data)
