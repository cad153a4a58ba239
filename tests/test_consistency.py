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
    result = stock_consistency(redis_url, sqlite_url, "p1", timeout="500ms")
    assert result["drained"] is False and result["consistent"] is False
    assert result["violations"][0].startswith("queue not drained")
    assert result["stuck"] == ["o9"] and result["lag_count"] == 1


def test_stuck_orders_are_told_apart_from_lost_ones(redis_url, redis_conn, sqlite_url):
    """Pending in the queue is stuck; acknowledged, in neither store, is lost."""
    _seed(sqlite_url, redis_conn, stock_sql=4, stock_redis=1, orders=ORDERS[:1])
    redis_conn.xgroup_create("orders:stream", "inventory", id="0", mkstream=True)
    for order_id in ("o1", "o2", "o3"):
        redis_conn.xadd("orders:stream", {"order_id": order_id})
    delivered = redis_conn.xreadgroup("inventory", "dead", {"orders:stream": ">"})
    first = delivered[0][1][0][0]
    redis_conn.xack("orders:stream", "inventory", first)  # o1 done
    redis_conn.xadd("orders:stream", {"order_id": "o4"})  # undelivered
    acknowledged = ["o1", "o2", "o3", "o4", "o5"]
    result = stock_consistency(
        redis_url, sqlite_url, "p1", acknowledged_ids=acknowledged, timeout=0.3
    )
    assert result["stuck"] == ["o2", "o3", "o4"] and result["stuck_count"] == 3
    assert result["lost"] == ["o5"]
    assert result["pending_count"] == 2 and result["lag_count"] == 1
    assert any("3 orders stuck" in v for v in result["violations"])


def test_other_table_and_column_names_by_arguments(redis_url, redis_conn, sqlite_url):
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE inv (sku TEXT, qty INT)"))
        conn.execute(text("CREATE TABLE purchases (ref TEXT, sku TEXT, seq INT)"))
        conn.execute(text("INSERT INTO inv VALUES ('s1', 1)"))
        conn.execute(
            text("INSERT INTO purchases VALUES ('a', 's1', 1), ('b', 's1', 2)")
        )
    engine.dispose()
    redis_conn.set("inventory/s1", 1)
    result = stock_consistency(
        redis_url,
        sqlite_url,
        "s1",
        acknowledged_ids=["a", "b", "c"],
        initial_stock=3,
        stock_key="inventory/{product_id}",
        products_table="inv",
        orders_table="purchases",
        columns={
            "product_id": "sku",
            "stock": "qty",
            "initial_stock": None,
            "order_id": "ref",
            "order_product_id": "sku",
            "sequence": "seq",
        },
    )
    assert result["sql_stock"] == 1 and result["distinct_orders"] == 2
    assert result["lost"] == ["c"] and result["consistent"] is False


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"redis_url": "http://nope"}, "redis_url"),
        ({"db_url": "not a url"}, "db_url"),
        ({"product_id": ""}, "product_id"),
        ({"initial_stock": -1}, "initial_stock"),
        ({"timeout": -2}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"columns": {"order": "x"}}, "columns"),
        ({"columns": {"order_id": ""}}, "columns.order_id"),
        ({"columns": {"initial_stock": None}}, "initial_stock"),
        ({"stock_key": "stock:{sku}"}, "stock_key"),
        ({"acknowledged_ids": "o1"}, "acknowledged_ids"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument, redis_url, sqlite_url):
    args = {"redis_url": redis_url, "db_url": sqlite_url, "product_id": "p1"}
    args.update(kwargs)
    with pytest.raises(ActivityFailed, match=argument):
        stock_consistency(**args)
