"""The consistency probe against real Redis and SQL, and its judgement on crafted facts."""

import pytest
from chaoslib.exceptions import ActivityFailed
from sqlalchemy import create_engine, text

from chaospika import _records
from chaospika.consistency.probes import stock_consistency
from chaospika.consistency.stock import StockFacts, judge

ORDERS = [(f"o{i}", f"1700000000000-{i}") for i in range(1, 6)]


def test_balanced_books_are_consistent():
    facts = StockFacts("p", 10, 5, 5, ORDERS, [o for o, _ in ORDERS])
    result = judge(facts)
    assert result["consistent"] is True, result["violations"]
    assert result["lost"] == [] and result["oversold"] == []


def test_lost_orders_are_named():
    stored = ORDERS[:3]
    facts = StockFacts("p", 10, 5, 7, stored, [o for o, _ in ORDERS])
    result = judge(facts)
    assert result["consistent"] is False
    assert result["lost"] == ["o4", "o5"]
    assert "Redis stock 5 != SQL stock 7" in result["violations"]


def test_duplicates_are_named_with_their_count():
    stored = ORDERS + [ORDERS[1], ORDERS[1]]
    facts = StockFacts("p", 10, 5, 3, stored, [o for o, _ in ORDERS])
    result = judge(facts)
    assert result["duplicates"] == {"o2": 3}
    assert result["consistent"] is False


def test_oversold_orders_are_the_ones_past_the_initial_stock_in_stream_order():
    shuffled = list(reversed(ORDERS))
    facts = StockFacts("p", 3, -2, -2, shuffled, [o for o, _ in ORDERS])
    result = judge(facts)
    assert result["oversold"] == ["o4", "o5"]
    assert any("negative stock in Redis" in v for v in result["violations"])


def test_stream_ids_sort_numerically_not_as_text():
    orders = [("late", "1700000000000-10"), ("early", "1700000000000-9")]
    result = judge(StockFacts("p", 1, -1, -1, orders, None))
    assert result["oversold"] == ["late"]


def test_unexpected_orders_can_be_allowed():
    facts = StockFacts("p", 10, 5, 5, ORDERS, ["o1", "o2"])
    assert judge(facts)["unexpected"] == ["o3", "o4", "o5"]
    assert judge(facts, allow_unexpected=True)["consistent"] is True


def test_uninitialised_product_with_nothing_sold_is_consistent():
    assert judge(StockFacts("p", None, None, None, [], None))["consistent"] is True


def _seed(db_url, redis_conn, stock_sql, stock_redis, orders, initial=5):
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE products (product_id VARCHAR(64) PRIMARY KEY, "
                "stock INTEGER NOT NULL, initial_stock INTEGER NOT NULL)"
            )
        )
        conn.execute(
            text(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, order_id VARCHAR(64), "
                "product_id VARCHAR(64), stream_id VARCHAR(32))"
            )
        )
        conn.execute(
            text("INSERT INTO products VALUES ('p1', :s, :i)"),
            {"s": stock_sql, "i": initial},
        )
        for n, (order_id, stream_id) in enumerate(orders, 1):
            conn.execute(
                text("INSERT INTO orders VALUES (:n, :o, 'p1', :s)"),
                {"n": n, "o": order_id, "s": stream_id},
            )
    engine.dispose()
    redis_conn.set("stock:p1", stock_redis)


@pytest.mark.parametrize("db", ["sqlite_url", "postgres_url"])
def test_probe_reads_both_stores_and_the_load_record(
    db, request, redis_url, redis_conn
):
    db_url = request.getfixturevalue(db)
    _seed(db_url, redis_conn, stock_sql=3, stock_redis=2, orders=ORDERS[:2])
    _records.put("load", "orders", {"captures": {"order_id": ["o1", "o2", "o3"]}})
    result = stock_consistency(redis_url, db_url, "p1", load="orders")
    assert result["consistent"] is False
    assert result["lost"] == ["o3"]
    assert result["initial_stock"] == 5 and result["sql_stock"] == 3
    assert result["drained"] is True


def test_probe_waits_for_a_backlog_then_reports_undrained(
    redis_url, redis_conn, sqlite_url
):
    _seed(sqlite_url, redis_conn, stock_sql=5, stock_redis=5, orders=[])
    redis_conn.xgroup_create("orders:stream", "inventory", id="0", mkstream=True)
    redis_conn.xadd("orders:stream", {"order_id": "o9"})
    result = stock_consistency(redis_url, sqlite_url, "p1", drain_timeout=0.5)
    assert result["drained"] is False and result["consistent"] is False
    assert result["violations"][0].startswith("queue not drained")


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"redis_url": "http://nope"}, "redis_url"),
        ({"db_url": "not a url"}, "db_url"),
        ({"product_id": ""}, "product_id"),
        ({"initial_stock": -1}, "initial_stock"),
        ({"drain_timeout": -2}, "drain_timeout"),
        ({"acknowledged_ids": "o1"}, "acknowledged_ids"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument, redis_url, sqlite_url):
    args = {"redis_url": redis_url, "db_url": sqlite_url, "product_id": "p1"}
    args.update(kwargs)
    with pytest.raises(ActivityFailed, match=argument):
        stock_consistency(**args)
