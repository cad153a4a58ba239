"""SQL probes on fresh SQLite, PostgreSQL and MariaDB databases."""

import pytest
from chaoslib.exceptions import ActivityFailed
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from chaospika.sql import probes
from chaospika.sql.probes import count_rows, query_scalar

ROWS = [("o1", "p1", "10.50"), ("o2", "p1", "2.25"), ("o3", "p2", "7.00")]


@pytest.fixture(params=["sqlite_url", "postgres_url", "mysql_url"])
def db_url(request):
    """A fresh database of each kind holding a small `orders` table."""
    url = request.getfixturevalue(request.param)
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
    with pytest.raises(SQLAlchemyError), probes._read_only(db_url) as conn:
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
