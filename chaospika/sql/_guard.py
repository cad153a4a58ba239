"""Checks of the SQL probes' arguments, made before any connection is opened.

The text of a query is checked word by word, anywhere (even inside quotes and
comments): one statement, a SELECT, no write, no row lock, and no function known
to act outside the read-only transaction. Values belong in ``params``.
"""

import re
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaospika._validate import require_number
from chaospika.loadengine import ScenarioError, parse_duration

__all__ = [
    "DEFAULT_TIMEOUT",
    "OUTSIDE_FUNCTIONS",
    "check_params",
    "check_sql",
    "check_table",
    "check_timeout",
]

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 3600.0
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
READ_QUERY = re.compile(r"[(\s]*(select|with)\b", re.IGNORECASE)
ROW_LOCK = re.compile(
    r"\bfor\s+(?:no\s+key\s+)?update\b|\bfor\s+(?:key\s+)?share\b"
    r"|\block\s+in\s+share\s+mode\b",
    re.IGNORECASE,
)
UNICODE_ESCAPE = re.compile(r"\bu&['\"]", re.IGNORECASE)
# Words that make a single SELECT write: data-modifying CTEs and SELECT ... INTO
# (a table, variables, OUTFILE / DUMPFILE). Row locks are matched by ROW_LOCK.
WRITING_WORDS = {"insert", "update", "delete", "merge", "into", "share"}
# Functions a read-only transaction does not stop: they open other connections,
# signal other sessions, write server files or WAL, take session locks, or run SQL
# text built at run time (which would escape this check).
OUTSIDE_FUNCTIONS = {
    # PostgreSQL
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_rotate_logfile_old",
    "pg_log_backend_memory_contexts",
    "pg_log_standby_snapshot",
    "pg_switch_wal",
    "pg_switch_xlog",
    "pg_promote",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_xlog_replay_pause",
    "pg_xlog_replay_resume",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_emit_message",
    "pg_stat_statements_reset",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "lo_export",
    "lo_import",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "cursor_to_xml",
    "ts_stat",
    "ts_rewrite",
    "http_get",
    "http_post",
    "http_put",
    "http_patch",
    "http_delete",
    "http_head",
    # MySQL / MariaDB: named locks belong to the session, not the transaction
    "get_lock",
    "release_lock",
    "release_all_locks",
    "sys_exec",
    "sys_eval",
    # SQLite
    "load_extension",
    "writefile",
}
OUTSIDE_PREFIXES = (
    "dblink",  # dblink, dblink_exec, dblink_connect, ...: another connection
    "pg_advisory",
    "pg_try_advisory",
    "pg_create_",  # replication slots, restore points
    "pg_replication_origin_",
    "pg_stat_reset",
    "group_replication_",
    "asynchronous_connection_failover_",
    "keyring_key_",
)


def _refuse(name: str, expected: str, sql: str) -> ActivityFailed:
    return ActivityFailed(f"argument '{name}' {expected}, got {sql!r}")


def check_sql(name: str, sql: Any, whole_statement: bool = True) -> str:
    """Return `sql` stripped if it only reads, else raise naming argument `name`.

    `whole_statement` is a full query (one trailing ``;`` allowed, must start
    with SELECT or WITH); otherwise `sql` is a fragment such as a WHERE condition.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise ActivityFailed(
            f"argument '{name}' must be a non-empty SQL string, got {sql!r}"
        )
    statement = sql.strip()
    if whole_statement and statement.endswith(";"):
        statement = statement[:-1].rstrip()
    if ";" in statement:
        where = "only at the very end" if whole_statement else "nowhere"
        raise _refuse(
            name,
            f"must be exactly one statement: ';' is allowed {where} "
            "(pass values containing ';' in 'params')",
            sql,
        )
    if whole_statement and not READ_QUERY.match(statement):
        raise _refuse(name, "must be one SELECT (or WITH ... SELECT)", sql)
    if UNICODE_ESCAPE.search(statement):
        raise _refuse(
            name, "must spell names plainly: Unicode escapes (U&'...') are refused", sql
        )
    if ROW_LOCK.search(statement):
        raise _refuse(
            name,
            "must be read-only: row locks (FOR UPDATE, FOR SHARE, LOCK IN SHARE "
            "MODE) are refused",
            sql,
        )
    words = {word.lower() for word in re.findall(r"\w+", statement)}
    outside = sorted(
        word
        for word in words
        if word in OUTSIDE_FUNCTIONS or word.startswith(OUTSIDE_PREFIXES)
    )
    if outside:
        calls = ", ".join(f"{word}()" for word in outside)
        raise _refuse(
            name,
            f"must be read-only: {calls} acts outside the read-only transaction "
            "(another connection or session, server files, session locks or SQL "
            "built at run time) and is refused",
            sql,
        )
    if "into" in words:
        raise _refuse(
            name,
            "must be read-only: SELECT ... INTO (a table, variables or a file) is "
            "refused, as is the word 'into' anywhere (pass values in 'params')",
            sql,
        )
    writing = sorted(WRITING_WORDS.intersection(words))
    if writing:
        raise _refuse(
            name,
            f"must be read-only: refusing {', '.join(writing)!r}, which writes "
            "(a data-modifying statement or CTE such as WITH d AS (DELETE ...) "
            "SELECT); such words are refused anywhere (pass values in 'params')",
            sql,
        )
    return statement


def check_params(params: Any) -> dict[str, Any]:
    """Return `params` (None becomes {}) if it maps placeholder names to values."""
    if params is None:
        return {}
    if not isinstance(params, dict) or not all(
        isinstance(key, str) and IDENTIFIER.fullmatch(key) for key in params
    ):
        raise ActivityFailed(
            f"argument 'params' must map placeholder names to values, got {params!r}"
        )
    return params


def check_table(table: Any) -> list[str]:
    """Return the parts of `table` (``name`` or ``schema.name``)."""
    parts = table.split(".") if isinstance(table, str) else []
    if not 1 <= len(parts) <= 2 or not all(IDENTIFIER.fullmatch(p) for p in parts):
        raise ActivityFailed(
            "argument 'table' must be a table name, optionally schema-qualified "
            f"(letters, digits, _), got {table!r}"
        )
    return parts


def check_timeout(timeout: Any) -> float:
    """Return `timeout` in seconds: a number, a numeric string or "500ms", "30s"."""
    value = timeout
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
        value = float(value)
    try:
        seconds = parse_duration("timeout", value, allow_zero=False)
    except ScenarioError as error:
        raise ActivityFailed(f"argument 'timeout': {error.message}") from None
    seconds = require_number("timeout", seconds, allow_equal=False)
    if seconds > MAX_TIMEOUT:
        raise ActivityFailed(
            f"argument 'timeout' must be at most {MAX_TIMEOUT:g} s (1h), got {timeout!r}"
        )
    return seconds
