"""Read-only SQL probes: count rows, read one scalar (SQLAlchemy URLs).

Each call runs exactly one SELECT (or WITH ... SELECT) on its own connection, in
a read-only transaction with a statement timeout, then rolls back and closes:
PostgreSQL (``SET TRANSACTION READ ONLY``, ``statement_timeout``), MariaDB/MySQL
(``START TRANSACTION READ ONLY``, ``max_statement_time`` / ``max_execution_time``)
and SQLite (file opened ``mode=ro``, ``PRAGMA query_only``, interrupted at the
deadline). Other databases are refused.

Before connecting, the text is refused if it holds more than one statement, a
write (INSERT, UPDATE, DELETE, MERGE, SELECT ... INTO, a data-modifying CTE), a
row lock (FOR UPDATE / FOR SHARE) or a function a read-only transaction does not
stop (``dblink*``, ``pg_terminate_backend``, ``pg_cancel_backend``, ``GET_LOCK``,
``query_to_xml``, ...). Words are matched anywhere, even inside quotes: put values
in `params` (``:name`` placeholders). Calls hidden inside your own functions are
not seen: for a hard guarantee, connect as a role that is no superuser, lacks
pg_signal_backend and may not execute dblink functions.
"""

import datetime
import decimal
import uuid
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaospika.sql._guard import (
    DEFAULT_TIMEOUT,
    check_params,
    check_sql,
    check_table,
    check_timeout,
)
from chaospika.sql._session import run_scalar

__all__ = ["count_rows", "query_scalar"]


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
    timeout: float = DEFAULT_TIMEOUT,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """Count the rows of `table` (``schema.table`` allowed), optionally `where`.

    `where` is an SQL condition with ``:name`` placeholders bound from `params`,
    e.g. ``product_id = :p``; it is checked like `query_scalar`'s query (no ``;``,
    writes, row locks or out-of-transaction functions). Runs in a read-only
    transaction that the database cancels after `timeout` (seconds, or a duration
    such as ``"500ms"`` or ``"30s"``; default 30 s, at most 1 h).
    """
    parts = check_table(table)
    condition = check_sql("where", where, False) if where is not None else None
    values = check_params(params)
    seconds = check_timeout(timeout)

    def build(preparer: Any) -> str:
        name = ".".join(preparer.quote(part) for part in parts)
        sql = f"SELECT COUNT(*) FROM {name}"
        return f"{sql} WHERE ({condition})" if condition else sql

    count = run_scalar(
        db_url, build, values, f"counting rows of {table!r}", seconds, secrets
    )
    return int(count)


def query_scalar(
    db_url: str,
    query: str,
    params: dict = None,
    timeout: float = DEFAULT_TIMEOUT,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Any:
    """Return the first column of the first row of a read-only `query` (or null).

    `query` must be exactly one SELECT (or WITH ... SELECT; one trailing ``;`` is
    allowed) with ``:name`` placeholders bound from `params`. Refused before
    connecting: several statements, writes and data-modifying CTEs, SELECT ...
    INTO, FOR UPDATE / FOR SHARE, and functions that act outside the transaction
    (``dblink*``, ``pg_terminate_backend``, ``pg_cancel_backend``, ``GET_LOCK``, ...).
    It then runs in a read-only transaction (refusals by the database are reported
    as such) that the database cancels after `timeout` (seconds, or ``"500ms"``,
    ``"30s"``; default 30 s, at most 1 h). Decimals become int/float, dates ISO
    strings.
    """
    statement = check_sql("query", query)
    values = check_params(params)
    seconds = check_timeout(timeout)
    value = run_scalar(db_url, lambda _: statement, values, "query", seconds, secrets)
    return _json_friendly(value)
