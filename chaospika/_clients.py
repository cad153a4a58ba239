"""Validated Redis and SQL connections shared by the activities."""

import os

import redis
from chaoslib.exceptions import ActivityFailed
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from chaospika._validate import require_url

__all__ = ["redis_client", "sql_engine"]


def redis_client(redis_url: str, arg: str = "redis_url") -> redis.Redis:
    """Return a Redis client for `redis_url` (redis:// or rediss://)."""
    require_url(arg, redis_url, ("redis", "rediss", "unix"))
    return redis.Redis.from_url(
        redis_url, decode_responses=True, socket_connect_timeout=3, socket_timeout=10
    )


def expand_sqlite(db_url: str) -> str:
    """Expand a leading ``~`` in the file of a SQLite URL."""
    prefix = "sqlite:///"
    if db_url.startswith(prefix + "~"):
        return prefix + os.path.expanduser(db_url[len(prefix) :])
    return db_url


def sql_engine(db_url: str, arg: str = "db_url") -> Engine:
    """Return an SQLAlchemy engine for `db_url`; a bad URL names `arg`."""
    if not isinstance(db_url, str) or not db_url.strip():
        raise ActivityFailed(
            f"argument '{arg}' must be an SQLAlchemy URL, got {db_url!r}"
        )
    try:
        url = make_url(expand_sqlite(db_url.strip()))
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ValueError) as error:
        raise ActivityFailed(f"argument '{arg}' is not a valid SQLAlchemy URL: {error}")
    except ImportError as error:
        raise ActivityFailed(
            f"argument '{arg}': the database driver is not installed ({error})"
        )
