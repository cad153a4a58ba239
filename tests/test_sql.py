"""SQL probes on fresh SQLite, PostgreSQL and MariaDB databases."""

import logging
import time

import pytest
from chaoslib.exceptions import ActivityFailed
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from chaospika.sql import _session
from chaospika.sql.probes import count_rows, query_scalar

ROWS = [("o1", "p1", "10.50"), ("o2", "p1", "2.25"), ("o3", "p2", "7.00")]
ORDER_IDS = ["o1", "o2", "o3"]


@pytest.fixture(params=["sqlite_url", "postgres_url", "mysql_url"])
def db_url(request):
    """A fresh database of each kind holding a small `orders` table."""
    return with_orders(request.getfixturevalue(request.param))


def with_orders(url):
    """Create and fill the `orders` table in the database at `url`; return `url`."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE orders (order_id VARCHAR(16) PRIMARY KEY, "
                "product_id VARCHAR(16) NOT NULL, amount NUMERIC(10, 2))"
            )
        )
        conn.execute(
            text("INSERT INTO orders VALUES (:o, :p, :a)"),
            [{"o": o, "p": p, "a": a} for o, p, a in ROWS],
        )
    engine.dispose()
    return url


def order_ids(url):
    engine = create_engine(url)
    with engine.connect() as conn:
        ids = sorted(conn.execute(text("SELECT order_id FROM orders")).scalars())
    engine.dispose()
    return ids


def orders(url):
    """Every row of `orders`, sorted, amounts as strings."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM orders ORDER BY order_id")).all()
    engine.dispose()
    return [(o, p, f"{float(a):.2f}") for o, p, a in rows]


def schema_of(url):
    engine = create_engine(url)
    name = {"sqlite": "main", "postgresql": "public"}.get(engine.dialect.name)
    engine.dispose()
    return name or url.rsplit("/", 1)[1]


def test_count_rows(db_url):
    assert count_rows(db_url, "orders") == 3
    assert count_rows(db_url, "orders", "product_id = :p", {"p": "p1"}) == 2
    assert count_rows(db_url, f"{schema_of(db_url)}.orders", "amount > 5") == 2
    assert count_rows(db_url, "orders", "product_id = :p", {"p": "none"}) == 0


def test_query_scalar_returns_json_friendly_values(db_url):
    total = query_scalar(db_url, "SELECT SUM(amount) FROM orders")
    assert total == pytest.approx(19.75) and isinstance(total, float)
    whole = query_scalar(db_url, "SELECT SUM(amount) FROM orders WHERE order_id = 'o3'")
    assert whole == 7 and isinstance(whole, int)
    assert query_scalar(db_url, "select count(*) from orders;") == 3
    assert query_scalar(db_url, "SELECT order_id FROM orders WHERE 1 = 0") is None
    like = "SELECT COUNT(*) FROM orders WHERE order_id LIKE 'o%' AND product_id = :p"
    assert query_scalar(db_url, like, {"p": "p2"}) == 1
    cte = (
        "WITH big AS (SELECT * FROM orders WHERE amount > :m) SELECT COUNT(*) FROM big"
    )
    assert query_scalar(db_url, cte, {"m": 5}) == 2
    assert query_scalar(db_url, "SELECT MAX(order_id) FROM orders") == "o3"


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO orders VALUES ('o9', 'p9', 1)",
        "UPDATE orders SET amount = 0",
        "DELETE FROM orders",
        "DROP TABLE orders",
        "SELECT 1; DROP TABLE orders",
        "SELECT 1; DELETE FROM orders;",
        "SELECT * INTO copy_of_orders FROM orders",
        "SELECT order_id FROM orders FOR UPDATE",
        "SELECT order_id FROM orders FOR SHARE",
        "SELECT order_id FROM orders LOCK IN SHARE MODE",
        "WITH gone AS (DELETE FROM orders RETURNING order_id) SELECT COUNT(*) FROM gone",
        "/* hidden */ DELETE FROM orders",
        "SELECT 1 /*! INTO OUTFILE '/tmp/pika-out' */",
        "",
        "   ",
    ],
)
def test_query_scalar_refuses_anything_but_one_select(db_url, query):
    with pytest.raises(ActivityFailed, match="'query'"):
        query_scalar(db_url, query)
    assert order_ids(db_url) == ["o1", "o2", "o3"]


def test_writes_fail_inside_the_read_only_transaction(db_url):
    """The second line of defence: the transaction itself refuses writes."""
    with pytest.raises(SQLAlchemyError), _session.read_only(db_url, 5) as conn:
        conn.execute(text("INSERT INTO orders VALUES ('o9', 'p9', 1)"))
    assert order_ids(db_url) == ["o1", "o2", "o3"]
    assert count_rows(db_url, "orders") == 3


def test_postgres_side_effect_functions_are_refused(postgres_url):
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SEQUENCE pika_seq"))
    engine.dispose()
    with pytest.raises(ActivityFailed, match="read-only transaction"):
        query_scalar(postgres_url, "SELECT nextval('pika_seq')")


def test_missing_table_fails_with_the_database_error(db_url):
    with pytest.raises(ActivityFailed, match="'no_such_table'"):
        count_rows(db_url, "no_such_table")
    with pytest.raises(ActivityFailed, match="query failed"):
        query_scalar(db_url, "SELECT nope FROM orders")


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda url: count_rows(url, "orders; DROP TABLE orders"), "table"),
        (lambda url: count_rows(url, "a.b.c"), "table"),
        (lambda url: count_rows(url, ""), "table"),
        (lambda url: count_rows(url, None), "table"),
        (lambda url: count_rows(url, "orders", "1 = 1; DELETE FROM orders"), "where"),
        (lambda url: count_rows(url, "orders", "0 = (DELETE FROM orders)"), "where"),
        (lambda url: count_rows(url, "orders", "1 = 1) FOR UPDATE --"), "where"),
        (
            lambda url: count_rows(url, "orders", "pg_cancel_backend(1)"),
            "where",
        ),
        (lambda url: count_rows(url, "orders", "", None), "where"),
        (lambda url: count_rows(url, "orders", "id = :i", ["x"]), "params"),
        (lambda url: count_rows(url, "orders", "id = :i", {"bad key": 1}), "params"),
        (lambda url: count_rows("not a url", "orders"), "db_url"),
        (lambda url: count_rows(None, "orders"), "db_url"),
        (lambda url: query_scalar(url, None), "query"),
        (lambda url: query_scalar(url, "SELECT 1", "p"), "params"),
        (
            lambda url: query_scalar("sqlite:////nonexistent/pika.db", "SELECT 1"),
            "db_url",
        ),
    ],
)
def test_bad_arguments_name_the_argument(sqlite_url, call, argument):
    with pytest.raises(ActivityFailed, match=f"'{argument}'"):
        call(sqlite_url)


# --- read-only for real: every way to write, lock or act outside is refused ---


def refused(url, query, params=None, match="", timeout=5):
    """Run `query` through the probe; return the ActivityFailed message."""
    with pytest.raises(ActivityFailed, match=match) as info:
        query_scalar(url, query, params, timeout)
    return str(info.value)


def refused_by_database(url, sql):
    """Run `sql` past the text checks, in the read-only session; return the error."""
    with pytest.raises(ActivityFailed, match="refused by the database") as info:
        _session.run_scalar(url, lambda _: sql, {}, "query", 5)
    return str(info.value)


COMMON_ATTEMPTS = [
    ("SELECT 1; DELETE FROM orders", "exactly one statement"),
    ("SELECT COUNT(*) FROM orders; SELECT 1;", "exactly one statement"),
    ("SELECT order_id FROM orders FOR UPDATE", "row locks"),
    ("SELECT order_id FROM orders FOR SHARE", "row locks"),
    (
        "WITH d AS (DELETE FROM orders RETURNING order_id) SELECT COUNT(*) FROM d",
        "data-modifying",
    ),
    (
        "WITH u AS (UPDATE orders SET amount = 0 RETURNING 1) SELECT COUNT(*) FROM u",
        "data-modifying",
    ),
    ("INSERT INTO orders VALUES ('o9', 'p9', 1)", "one SELECT"),
    ("UPDATE orders SET amount = 0", "one SELECT"),
    ("DELETE FROM orders", "one SELECT"),
    ("SELECT * INTO orders_copy FROM orders", "SELECT ... INTO"),
]


def test_postgres_refuses_every_write_and_keeps_the_data(postgres_url):
    url = with_orders(postgres_url)
    before = orders(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SEQUENCE pika_seq"))
    # A bystander session: pg_terminate_backend / pg_cancel_backend would hit it.
    bystander = engine.connect()
    pid = bystander.execute(text("SELECT pg_backend_pid()")).scalar()
    bystander.commit()
    attempts = [(query, None, match) for query, match in COMMON_ATTEMPTS] + [
        ("SELECT pg_terminate_backend(:pid)", {"pid": pid}, "pg_terminate_backend"),
        ("SELECT pg_cancel_backend(:pid)", {"pid": pid}, "pg_cancel_backend"),
        ("SELECT pg_catalog.PG_TERMINATE_BACKEND(:pid)", {"pid": pid}, "outside"),
        ("SELECT query_to_xml(:q, true, true, '')", {"q": "SELECT 1"}, "outside"),
        ("SELECT pg_advisory_lock(42)", None, "outside"),
        ("SELECT order_id FROM orders FOR NO KEY UPDATE", None, "row locks"),
        ('SELECT U&"pg_sleep"(0)', None, "Unicode escapes"),
    ]
    for query, params, match in attempts:
        assert "argument 'query' must" in refused(url, query, params, match)
    # Refused by the database itself, reported as such.
    assert "nextval" in refused(url, "SELECT nextval('pika_seq')", match="refused")
    for sql in (
        "INSERT INTO orders VALUES ('o9', 'p9', 1)",
        "UPDATE orders SET amount = 0",
        "DELETE FROM orders",
        "WITH d AS (DELETE FROM orders RETURNING order_id) SELECT COUNT(*) FROM d",
        "SELECT order_id FROM orders FOR UPDATE",
        "SELECT * INTO orders_copy FROM orders",
    ):
        assert "read-only transaction" in refused_by_database(url, sql)
    with pytest.raises(ActivityFailed, match="read-write mode"):
        query_scalar(url, "SELECT set_config('transaction_read_only', 'off', true)")
    # Nothing changed: the rows, the sequence, the bystander session.
    assert orders(url) == before
    assert bystander.execute(text("SELECT pg_backend_pid()")).scalar() == pid
    bystander.close()
    assert query_scalar(url, "SELECT last_value FROM pika_seq") == 1
    assert query_scalar(url, "SELECT is_called FROM pika_seq") is False
    engine.dispose()


def test_postgres_refuses_dblink_and_keeps_the_data(postgres_url):
    url = with_orders(postgres_url)
    before = orders(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        if not conn.execute(
            text("SELECT 1 FROM pg_available_extensions WHERE name = 'dblink'")
        ).scalar():
            pytest.skip("the dblink extension is not installed on this server")
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS dblink"))
        conn.execute(text("CREATE TABLE scratch (n INT)"))
    engine.dispose()
    target = make_url(url)
    conninfo = (
        f"host={target.host} port={target.port or 5432} user={target.username} "
        f"dbname={target.database}"
    )
    # Why refusing the function is needed: the read-only transaction alone does
    # not stop dblink_exec, whose statement runs on another connection.
    with _session.read_only(url, 5) as conn:
        conn.execute(
            text("SELECT dblink_exec(:c, 'INSERT INTO scratch VALUES (1)')"),
            {"c": conninfo},
        )
    assert query_scalar(url, "SELECT COUNT(*) FROM scratch") == 1
    # The payload travels in params, where no text check looks.
    payload = {"c": conninfo, "sql": "DELETE FROM orders"}
    for query, params, match in [
        ("SELECT dblink_exec(:c, :sql)", payload, "dblink_exec()"),
        ('SELECT "dblink_exec"(:c, :sql)', payload, "dblink_exec()"),
        ("SELECT public.dblink_exec(:c, :sql)", payload, "dblink_exec()"),
        ("SELECT n FROM dblink(:c, :sql) AS t(n text)", payload, "dblink()"),
        ("SELECT dblink_connect(:c)", {"c": conninfo}, "dblink_connect()"),
    ]:
        message = refused(url, query, params, match)
        assert "acts outside the read-only transaction" in message
    assert orders(url) == before
    assert query_scalar(url, "SELECT COUNT(*) FROM scratch") == 1


def test_mariadb_refuses_every_write_and_keeps_the_data(mysql_url):
    url = with_orders(mysql_url)
    before = orders(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SEQUENCE pika_seq"))
    attempts = list(COMMON_ATTEMPTS) + [
        ("SELECT GET_LOCK('pika', 0)", "get_lock()"),
        ("SELECT order_id FROM orders LOCK IN SHARE MODE", "row locks"),
        ("SELECT 1 INTO OUTFILE '/tmp/pika-sql-out'", "SELECT ... INTO"),
        ("SELECT 1 INTO @pika", "SELECT ... INTO"),
    ]
    for query, match in attempts:
        assert "argument 'query' must" in refused(url, query, match=match)
    # Refused by the database itself, reported as such.
    for sql in (
        "SELECT NEXT VALUE FOR pika_seq",
        "SELECT NEXTVAL(pika_seq)",
        "SELECT SETVAL(pika_seq, 100)",
    ):
        assert "READ ONLY transaction" in refused(url, sql, match="refused")
    for sql in (
        "INSERT INTO orders VALUES ('o9', 'p9', 1)",
        "UPDATE orders SET amount = 0",
        "DELETE FROM orders",
        "SELECT order_id FROM orders FOR UPDATE",
    ):  # (MariaDB itself allows LOCK IN SHARE MODE here: only the check stops it)
        assert "READ ONLY transaction" in refused_by_database(url, sql)
    assert orders(url) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT IS_FREE_LOCK('pika')")).scalar() == 1
        assert conn.execute(text("SELECT NEXT VALUE FOR pika_seq")).scalar() == 1
    engine.dispose()


def test_sqlite_refuses_every_write_and_keeps_the_data(sqlite_url, tmp_path):
    url = with_orders(sqlite_url)
    before = orders(url)
    attempts = list(COMMON_ATTEMPTS) + [
        ("SELECT load_extension('/tmp/nothing')", "load_extension()"),
        ("SELECT writefile('/tmp/pika-sql-out', 'x')", "writefile()"),
    ]
    for query, match in attempts:
        assert "argument 'query' must" in refused(url, query, match=match)
    for sql in (
        "INSERT INTO orders VALUES ('o9', 'p9', 1)",
        "UPDATE orders SET amount = 0",
        "DELETE FROM orders",
    ):
        assert "readonly database" in refused_by_database(url, sql)
    # The file itself is opened read-only: switching query_only off does not help.
    with (
        pytest.raises(SQLAlchemyError, match="readonly"),
        _session.read_only(url, 5) as conn,
    ):
        conn.exec_driver_sql("PRAGMA query_only = OFF")
        conn.exec_driver_sql("DELETE FROM orders")
    assert orders(url) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.db"]


@pytest.mark.parametrize(
    ("fixture", "query"),
    [
        ("postgres_url", "SELECT pg_sleep(5)"),
        ("mysql_url", "SELECT SLEEP(5)"),
        (
            "sqlite_url",
            (
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                "WHERE x < 1000000000) SELECT COUNT(*) FROM c"
            ),
        ),
    ],
)
@pytest.mark.parametrize("timeout", [0.5, "500ms"])
def test_the_statement_timeout_fires(request, fixture, query, timeout):
    url = with_orders(request.getfixturevalue(fixture))
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match=r"timeout of 0\.5s and was cancelled"):
        query_scalar(url, query, timeout=timeout)
    assert time.monotonic() - started < 3
    assert query_scalar(url, "SELECT COUNT(*) FROM orders", timeout="2s") == 3


def test_count_rows_has_the_statement_timeout_too(postgres_url):
    url = with_orders(postgres_url)
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match="counting rows of 'orders' did not"):
        count_rows(url, "orders", "pg_sleep(5) IS NOT NULL", timeout=0.5)
    assert time.monotonic() - started < 3


def test_postgres_session_is_read_only_with_the_timeout(postgres_url):
    setting = "SELECT current_setting(:name)"
    assert (
        query_scalar(postgres_url, setting, {"name": "transaction_read_only"}) == "on"
    )
    assert query_scalar(postgres_url, setting, {"name": "statement_timeout"}) == "30s"
    assert (
        query_scalar(postgres_url, setting, {"name": "statement_timeout"}, 1.5)
        == "1500ms"
    )


def test_mariadb_session_is_read_only_with_the_timeout(mysql_url):
    assert query_scalar(mysql_url, "SELECT @@in_transaction") == 1
    assert query_scalar(mysql_url, "SELECT @@session.max_statement_time") == 30
    assert query_scalar(mysql_url, "SELECT @@max_statement_time", timeout="2s") == 2


def test_passwords_are_masked_in_logs_and_errors(postgres_url, caplog):
    url = make_url(with_orders(postgres_url)).set(password="s3cret-pw")
    with_password = url.render_as_string(hide_password=False)
    caplog.set_level(logging.DEBUG, logger="chaostoolkit")
    assert query_scalar(with_password, "SELECT COUNT(*) FROM orders") == 3
    with pytest.raises(ActivityFailed) as failed:
        query_scalar(with_password, "SELECT nope FROM orders")
    unreachable = url.set(port=1).render_as_string(hide_password=False)
    with pytest.raises(ActivityFailed, match="'db_url': cannot connect") as refused:
        query_scalar(unreachable, "SELECT 1")
    assert "postgres:***@127.0.0.1:1/" in str(refused.value)
    assert "postgres:***@" in caplog.text
    for text_ in (caplog.text, str(failed.value), str(refused.value)):
        assert "s3cret-pw" not in text_


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("SELECT DBLINK_EXEC('x', 'y')", "dblink_exec()"),
        ('SELECT "dblink_exec"(:c, :s)', "dblink_exec()"),
        ("SELECT public.dblink_exec(:c, :s)", "dblink_exec()"),
        ('SELECT U&"dblink\\005fexec"(:c, :s)', "Unicode escapes"),
        ("SELECT pg_terminate_backend(123)", "pg_terminate_backend()"),
        ("SELECT pg_cancel_backend(123)", "pg_cancel_backend()"),
        ("SELECT ts_stat(:q)", "ts_stat()"),
        ("SELECT pg_try_advisory_lock(1)", "pg_try_advisory_lock()"),
        ("SELECT RELEASE_ALL_LOCKS()", "release_all_locks()"),
        ("SELECT 1 FROM orders FOR KEY SHARE", "row locks"),
        ("SELECT 1 FROM orders FOR UPDATE SKIP LOCKED", "row locks"),
        ("SELECT 1;;", "exactly one statement"),
        ("SHOW TABLES", "one SELECT"),
        ("CALL do_things()", "one SELECT"),
    ],
)
def test_query_refusals_say_what_was_expected(sqlite_url, query, expected):
    message = refused(sqlite_url, query, {"c": "", "s": "", "q": ""}, expected)
    assert message.startswith("argument 'query' must")


def test_reading_words_that_merely_contain_refused_ones_is_fine(sqlite_url):
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE log (updated_at TEXT, deleted INT)"))
        conn.execute(text("INSERT INTO log VALUES ('2024-01-01', 0)"))
    engine.dispose()
    assert query_scalar(sqlite_url, "SELECT MAX(updated_at) FROM log") == "2024-01-01"
    assert count_rows(sqlite_url, "log", "deleted = :d", {"d": 0}) == 1


@pytest.mark.parametrize("timeout", ["abc", 0, -1, "0s", True, None, 7200, "2h"])
def test_bad_timeouts_name_the_argument(sqlite_url, timeout):
    with pytest.raises(ActivityFailed, match="'timeout'"):
        query_scalar(sqlite_url, "SELECT 1", timeout=timeout)
    with pytest.raises(ActivityFailed, match="'timeout'"):
        count_rows(sqlite_url, "orders", timeout=timeout)
