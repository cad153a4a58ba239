"""One read-only, time-limited database session per probe call.

Each call opens its own connection (no pool), makes the session read-only and
time-limited in the database's own terms, runs one statement, rolls back and
closes the connection, so no setting, lock or transaction outlives the probe:

* PostgreSQL: ``SET TRANSACTION READ ONLY`` and ``SET LOCAL statement_timeout``;
* MariaDB: ``SET SESSION max_statement_time`` (MySQL: ``max_execution_time``)
  and ``lock_wait_timeout``, then ``START TRANSACTION READ ONLY``;
* SQLite: the file opened ``mode=ro``, ``PRAGMA query_only = ON`` and a progress
  handler that interrupts the statement at the deadline.

Other databases are refused: their read-only guarantee is not checked here.
"""

import contextlib
import logging
import math
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from chaoslib.exceptions import ActivityFailed
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from chaospika._clients import sql_engine
from chaospika._secrets import masked

__all__ = ["masked", "read_only", "run_scalar"]

logger = logging.getLogger("chaostoolkit")
CONNECT_TIMEOUT = 10
# Client-side backstop on top of the server's own timeout (MySQL drivers).
READ_GRACE = 10
SUPPORTED = ("postgresql", "mysql", "mariadb", "sqlite")
TIMEOUT_ERRNOS = {1969, 3024, 1205}  # MariaDB, MySQL, lock wait timeout
READ_ONLY_ERRNOS = {1792}  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
# Interrupted (1317) or lost the connection (2013, the driver's read timeout):
# a timeout only when the deadline has passed.
LATE_ERRNOS = {1317, 2013}


def _sqlite_read_only_url(url: URL) -> URL:
    """Return `url` opening its file read-only (``mode=ro``); memory stays as is."""
    database = url.database
    if database in (None, "", ":memory:"):
        return url
    if database.startswith("file:"):
        if str(url.query.get("uri", "")).lower() in ("true", "1"):
            return url.update_query_dict({"mode": "ro"})
        return url
    if not os.path.isfile(database):
        raise ActivityFailed(f"argument 'db_url': no SQLite database file {database!r}")
    path = urllib.request.pathname2url(os.path.abspath(database))
    return url.set(database=f"file:{path}").update_query_dict(
        {"mode": "ro", "uri": "true"}
    )


def _engine(db_url: str, timeout: float, secrets: Any = None) -> Engine:
    """Return an unpooled engine for `db_url` with connect and read timeouts."""
    checked = sql_engine(db_url, secrets=secrets)  # validates URL and driver
    url = checked.url
    checked.dispose()
    backend = url.get_backend_name()
    if backend not in SUPPORTED:
        raise ActivityFailed(
            "argument 'db_url' must be a PostgreSQL, MySQL/MariaDB or SQLite URL "
            f"(the read-only guarantee is not checked for {backend!r}), "
            f"got {masked(url)!r}"
        )
    driver = url.get_driver_name()
    args: dict[str, Any] = {}
    if backend == "sqlite":
        url = _sqlite_read_only_url(url)
        args["timeout"] = timeout  # wait for a writer's lock at most this long
    elif backend == "postgresql" and driver in ("psycopg", "psycopg2"):
        if "connect_timeout" not in url.query:
            args["connect_timeout"] = CONNECT_TIMEOUT
    elif driver in ("pymysql", "mysqldb", "mariadbconnector"):
        if "connect_timeout" not in url.query:
            args["connect_timeout"] = CONNECT_TIMEOUT
        args["read_timeout"] = math.ceil(timeout) + READ_GRACE
    return create_engine(url, poolclass=NullPool, connect_args=args)


def _start_read_only(conn: Connection, timeout: float) -> Callable[[], bool]:
    """Make `conn`'s transaction read-only and time-limited.

    Return a function telling whether the deadline has passed (for SQLite,
    whose interruption does not say why).
    """
    milliseconds = max(1, math.ceil(timeout * 1000))
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
    elif dialect in ("mysql", "mariadb"):
        if getattr(conn.dialect, "is_mariadb", False):
            conn.exec_driver_sql(
                f"SET SESSION max_statement_time = {milliseconds / 1000:.3f}"
            )
        else:
            conn.exec_driver_sql(f"SET SESSION max_execution_time = {milliseconds}")
        conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {math.ceil(timeout)}")
        conn.exec_driver_sql("START TRANSACTION READ ONLY")
    elif dialect == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")
    deadline = time.monotonic() + timeout

    def expired() -> bool:
        return time.monotonic() >= deadline

    if dialect == "sqlite":
        conn.connection.driver_connection.set_progress_handler(expired, 1000)
    return expired


@contextmanager
def read_only(db_url: str, timeout: float) -> Iterator[Connection]:
    """Yield a connection in a read-only transaction limited to `timeout` seconds.

    The transaction is rolled back and the connection closed at the end.
    """
    with _session(_engine(db_url, timeout), timeout) as conn:
        yield conn


@contextmanager
def _session(engine: Engine, timeout: float) -> Iterator[Connection]:
    """Yield a read-only connection of `engine`; dispose of `engine` at the end."""
    logger.debug(
        "read-only %s session, timeout %gs: %s",
        engine.dialect.name,
        timeout,
        masked(engine.url),
    )
    try:
        try:
            conn = engine.connect()
        except SQLAlchemyError as error:
            raise ActivityFailed(
                f"argument 'db_url': cannot connect to {masked(engine.url)}: "
                f"{_detail(error, engine.url)}"
            ) from None
        with conn:
            try:
                conn.info["pika_expired"] = _start_read_only(conn, timeout)
                yield conn
            finally:
                with contextlib.suppress(SQLAlchemyError):
                    conn.rollback()
    finally:
        engine.dispose()


def _detail(error: SQLAlchemyError, url: URL) -> str:
    """The driver's message on one line, without the URL's password."""
    detail = " ".join(str(getattr(error, "orig", None) or error).split())
    if url.password:
        detail = detail.replace(str(url.password), "***")
    return detail


def _kind(error: SQLAlchemyError, expired: bool) -> str:
    """Classify a database error as "timeout", "read-only" or "other"."""
    orig = getattr(error, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    args = getattr(orig, "args", ())
    errno = args[0] if args and isinstance(args[0], int) else None
    message = str(orig).lower()
    if state == "25006" or errno in READ_ONLY_ERRNOS or "readonly database" in message:
        return "read-only"
    if (
        (state in ("57014", "55P03") and "timeout" in message)
        or errno in TIMEOUT_ERRNOS
        or (expired and (errno in LATE_ERRNOS or "interrupted" in message))
    ):
        return "timeout"
    return "other"


def run_scalar(
    db_url: str,
    build: Callable[[Any], str],
    params: dict[str, Any],
    what: str,
    timeout: float,
    secrets: Any = None,
) -> Any:
    """Run the SQL that `build(identifier_preparer)` returns; return its scalar.

    Database refusals and timeouts come back as ActivityFailed saying so.
    """
    engine = _engine(db_url, timeout, secrets)
    expired: Callable[[], bool] = lambda: False
    try:
        with _session(engine, timeout) as conn:
            expired = conn.info["pika_expired"]
            sql = build(conn.dialect.identifier_preparer)
            return conn.execute(text(sql), params).scalar()
    except SQLAlchemyError as error:
        detail = _detail(error, engine.url)
        kind = _kind(error, expired())
        if kind == "timeout":
            message = (
                f"{what} did not finish within the timeout of {timeout:g}s and was "
                f"cancelled ({detail})"
            )
        elif kind == "read-only":
            message = (
                f"{what} was refused by the database: it tried to write or lock "
                f"inside the read-only transaction ({detail})"
            )
        else:
            message = f"{what} failed: {detail}"
        raise ActivityFailed(message) from error
