"""Read-only SQL probes: count rows, read one scalar (SQLAlchemy URLs).

Queries are checked to be a single SELECT (or WITH ... SELECT) and run in a
read-only transaction where the database supports it (PostgreSQL, MariaDB/MySQL,
SQLite). Put values in `params` (``:name`` placeholders), not in the SQL text:
words such as ``update`` or ``into`` and ``;`` are refused anywhere in the text,
even inside quotes.
"""

import datetime
import decimal
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from chaospika._clients import sql_engine

__all__ = ["count_rows", "query_scalar"]

logger = logging.getLogger("chaostoolkit")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
READ_QUERY = re.compile(r"[(\s]*(select|with)\b", re.IGNORECASE)
# Words that let a single SELECT write or lock: data-modifying CTEs, SELECT INTO
# (tables, variables, OUTFILE), FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE.
WRITING_WORDS = {"insert", "update", "delete", "merge", "into", "share"}
READ_ONLY_START = {
    "postgresql": "SET TRANSACTION READ ONLY",
    "mysql": "START TRANSACTION READ ONLY",
    "mariadb": "START TRANSACTION READ ONLY",
}


def _check_read_only(name: str, sql: Any, whole_statement: bool = True) -> str:
    """Return `sql` stripped if it is one read-only SELECT, else name `name`."""
    if not isinstance(sql, str) or not sql.strip():
        raise ActivityFailed(f"argument '{name}' must be a non-empty SQL string")
    statement = sql.strip()
    if statement.endswith(";") and whole_statement:
        statement = statement[:-1].rstrip()
    if ";" in statement:
        raise ActivityFailed(
            f"argument '{name}' must be a single statement without ';', got {sql!r}"
        )
    if whole_statement and not READ_QUERY.match(statement):
        raise ActivityFailed(
            f"argument '{name}' must be a SELECT (or WITH ... SELECT), got {sql!r}"
        )
    words = {word.lower() for word in re.findall(r"\w+", statement)}
    writing = sorted(WRITING_WORDS.intersection(words))
    if writing:
        raise ActivityFailed(
            f"argument '{name}' must be read-only: refusing {', '.join(writing)!r} "
            f"(pass values in 'params'), got {sql!r}"
        )
    return statement


def _check_params(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict) or not all(
        isinstance(key, str) and IDENTIFIER.fullmatch(key) for key in params
    ):
        raise ActivityFailed(
            f"argument 'params' must map placeholder names to values, got {params!r}"
        )
    return params


def _check_table(table: Any) -> list[str]:
    parts = table.split(".") if isinstance(table, str) else []
    if not 1 <= len(parts) <= 2 or not all(IDENTIFIER.fullmatch(p) for p in parts):
        raise ActivityFailed(
            "argument 'table' must be a table name, optionally schema-qualified "
            f"(letters, digits, _), got {table!r}"
        )
    return parts


@contextmanager
def _read_only(db_url: str) -> Iterator[Connection]:
    """Yield a connection inside a read-only transaction, rolled back at the end."""
    engine = sql_engine(db_url)
    database = engine.url.database
    if (
        engine.dialect.name == "sqlite"
        and database not in (None, "", ":memory:")
        and not database.startswith("file:")
        and not os.path.isfile(database)
    ):
        raise ActivityFailed(f"argument 'db_url': no SQLite database file {database!r}")
    try:
        with engine.connect() as conn:
            dialect = engine.dialect.name
            if dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = ON")
            elif dialect in READ_ONLY_START:
                conn.exec_driver_sql(READ_ONLY_START[dialect])
            else:
                logger.debug("no read-only transaction for dialect %s", dialect)
            try:
                yield conn
            finally:
                conn.rollback()
                if dialect == "sqlite":
                    conn.exec_driver_sql("PRAGMA query_only = OFF")
    finally:
        engine.dispose()


def _run_scalar(
    db_url: str, build: Callable[[Any], str], params: dict[str, Any], what: str
) -> Any:
    """Run the SQL that `build(identifier_preparer)` returns; return its scalar."""
    try:
        with _read_only(db_url) as conn:
            sql = build(conn.dialect.identifier_preparer)
            return conn.execute(text(sql), params).scalar()
    except SQLAlchemyError as error:
        detail = getattr(error, "orig", None) or error
        raise ActivityFailed(f"{what} failed: {detail}") from error


def _json_friendly(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode(errors="replace")
    return value


def count_rows(
    db_url: str,
    table: str,
    where: str = None,
    params: dict = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """Count the rows of `table` (``schema.table`` allowed), optionally `where`.

    `where` is an SQL condition with ``:name`` placeholders bound from `params`,
    e.g. ``product_id = :p``. Runs read-only.
    """
    parts = _check_table(table)
    condition = _check_read_only("where", where, False) if where is not None else None
    values = _check_params(params)

    def build(preparer: Any) -> str:
        name = ".".join(preparer.quote(part) for part in parts)
        sql = f"SELECT COUNT(*) FROM {name}"
        return f"{sql} WHERE ({condition})" if condition else sql

    count = _run_scalar(db_url, build, values, f"counting rows of {table!r}")
    return int(count)


def query_scalar(
    db_url: str,
    query: str,
    params: dict = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Any:
    """Return the first column of the first row of a read-only `query` (or null).

    `query` must be one SELECT (or WITH ... SELECT) with ``:name`` placeholders
    bound from `params`; writes, locks, SELECT ... INTO and several statements are
    refused. Decimals become int/float, dates ISO strings.
    """
    statement = _check_read_only("query", query)
    values = _check_params(params)
    value = _run_scalar(db_url, lambda _: statement, values, "query")
    return _json_friendly(value)
