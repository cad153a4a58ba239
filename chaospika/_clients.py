"""Validated Redis and SQL connections shared by the activities.

Credentials may come from the experiment's ``secrets`` instead of the URL: when
the URL carries no password, `redis_client` uses the secret ``redis_password`` and
`sql_engine` the secret ``db_password``, found at the top level of the secrets an
activity received or in any of their scopes, e.g.::

    "secrets": {"redis": {"redis_password": {"type": "env", "key": "REDIS_PW"}}}

with ``"secrets": ["redis"]`` in the activity's provider. The secret values are
registered so that no log record or error message shows them, and URLs in error
messages have their password masked.
"""

import os
from typing import TYPE_CHECKING, Any

import redis
from chaoslib.exceptions import ActivityFailed

from chaospika._secrets import (
    install_log_filter,
    redact_text,
    redact_url,
    register_secrets,
    secret_lookup,
)
from chaospika._validate import require_url

if TYPE_CHECKING:  # SQLAlchemy is imported when an engine is made: Redis-only
    from sqlalchemy.engine import Engine  # processes (watchdogs, cleanup) start faster

__all__ = ["DB_PASSWORD", "REDIS_PASSWORD", "redis_client", "sql_engine"]

REDIS_PASSWORD = "redis_password"  # secret filling a password missing from redis_url
DB_PASSWORD = "db_password"  # secret filling a password missing from db_url


def _use_secrets(secrets: Any) -> None:
    """Mask the values of `secrets` from now on (log records, error messages)."""
    install_log_filter()  # again: handlers may have been added since the import
    if secrets:
        register_secrets(secrets)


def redis_client(
    redis_url: str, arg: str = "redis_url", secrets: Any = None
) -> redis.Redis:
    """Return a Redis client for `redis_url` (redis://, rediss:// or unix://).

    A URL without a password uses the secret ``redis_password`` if `secrets`
    holds one (top level or any scope).
    """
    _use_secrets(secrets)
    parsed = require_url(arg, redis_url, ("redis", "rediss", "unix"))
    options: dict[str, Any] = {}
    password = secret_lookup(secrets, REDIS_PASSWORD)
    if password is not None and not parsed.password:
        options["password"] = password
    try:
        return redis.Redis.from_url(
            redis_url.strip(),
            decode_responses=True,
            socket_connect_timeout=3,
            socket_timeout=10,
            **options,
        )
    except ValueError as error:
        raise ActivityFailed(
            f"argument '{arg}' is not a valid Redis URL ({redact_text(error)}): "
            f"{redact_url(redis_url)!r}"
        ) from None


def expand_sqlite(db_url: str) -> str:
    """Expand a leading ``~`` in the file of a SQLite URL."""
    prefix = "sqlite:///"
    if db_url.startswith(prefix + "~"):
        return prefix + os.path.expanduser(db_url[len(prefix) :])
    return db_url


def sql_engine(db_url: str, arg: str = "db_url", secrets: Any = None) -> "Engine":
    """Return an SQLAlchemy engine for `db_url`; a bad URL names `arg`.

    A URL without a password (other than SQLite) uses the secret
    ``db_password`` if `secrets` holds one (top level or any scope).
    """
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    _use_secrets(secrets)
    if not isinstance(db_url, str) or not db_url.strip():
        raise ActivityFailed(
            f"argument '{arg}' must be an SQLAlchemy URL, got {redact_text(repr(db_url))}"
        )
    try:
        url = make_url(expand_sqlite(db_url.strip()))
        password = secret_lookup(secrets, DB_PASSWORD)
        wanted = password is not None and not url.password
        if wanted and url.get_backend_name() != "sqlite":
            url = url.set(password=password)
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ValueError) as error:
        raise ActivityFailed(
            f"argument '{arg}' is not a valid SQLAlchemy URL: {redact_text(error)}"
        ) from None
    except ImportError as error:
        raise ActivityFailed(
            f"argument '{arg}': the database driver is not installed "
            f"({redact_text(error)})"
        ) from None
