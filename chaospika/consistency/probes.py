"""Consistency probes: does the stored data agree with what users were told?"""

import logging

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from sqlalchemy import column, select, table
from sqlalchemy.exc import SQLAlchemyError

from chaospika import _records
from chaospika._clients import redis_client, sql_engine
from chaospika._validate import require_int, require_number, require_text
from chaospika.consistency.stock import StockFacts, judge
from chaospika.load.session import RECORD_KIND
from chaospika.redis.actions import wait_for_drain

__all__ = ["stock_consistency"]

logger = logging.getLogger("chaostoolkit")


def stock_consistency(
    redis_url: str,
    db_url: str,
    product_id: str,
    load: str = None,
    acknowledged_ids: list = None,
    initial_stock: int = None,
    stream: str = "orders:stream",
    group: str = "inventory",
    drain_timeout: float = 30.0,
    stock_key: str = "stock:{product_id}",
    products_table: str = "products",
    orders_table: str = "orders",
    allow_unexpected: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Check stock and orders across Redis and SQL once the queue has drained.

    initial = remaining + orders in both stores, no negative stock, no order
    stored twice, none beyond the initial stock (oversold). Given the order ids
    clients saw acknowledged (`acknowledged_ids`, or those captured by the load
    named `load`), every acknowledged id missing from SQL is `lost` and every
    stored id never acknowledged is `unexpected`. Returns `consistent` and the
    offending ids.
    """
    product_id = require_text("product_id", product_id)
    drain_timeout = require_number("drain_timeout", drain_timeout)
    if initial_stock is not None:
        initial_stock = require_int("initial_stock", initial_stock)
    if acknowledged_ids is not None and not isinstance(acknowledged_ids, list):
        raise ActivityFailed("argument 'acknowledged_ids' must be a list of order ids")
    for arg, value in (
        ("stream", stream),
        ("group", group),
        ("stock_key", stock_key),
        ("products_table", products_table),
        ("orders_table", orders_table),
    ):
        require_text(arg, value)
    acknowledged = _acknowledged(load, acknowledged_ids)
    client = redis_client(redis_url)
    engine = sql_engine(db_url)

    drain = {"drained": True, "seconds": 0.0}
    if client.exists(stream):
        try:
            drain = wait_for_drain(redis_url, stream, group, timeout=drain_timeout)
        except ActivityFailed as error:
            drain = {"drained": False, "seconds": drain_timeout, "error": str(error)}

    raw = client.get(stock_key.format(product_id=product_id))
    redis_stock = int(raw) if raw is not None else None
    sql_stock, sql_initial, orders = _read_sql(
        engine, products_table, orders_table, product_id
    )
    facts = StockFacts(
        product_id,
        initial_stock if initial_stock is not None else sql_initial,
        redis_stock,
        sql_stock,
        orders,
        acknowledged,
    )
    result = judge(facts, allow_unexpected=allow_unexpected)
    result["drained"] = drain["drained"]
    result["drain_seconds"] = drain["seconds"]
    if not drain["drained"]:
        result["consistent"] = False
        result["violations"].insert(0, f"queue not drained within {drain_timeout:g}s")
    log = logger.info if result["consistent"] else logger.warning
    log("stock consistency of %s: %s", product_id, result["violations"] or "consistent")
    return result


def _acknowledged(load: str | None, ids: list[str] | None) -> list[str] | None:
    if ids is not None:
        return [str(i) for i in ids]
    if load is None:
        return None
    record = _records.get(RECORD_KIND, require_text("load", load))
    if record is None:
        logger.info("load '%s' has not run yet: no acknowledged ids to compare", load)
        return None
    return list(record.get("captures", {}).get("order_id", []))


def _read_sql(engine, products_table: str, orders_table: str, product_id: str):
    products = table(
        products_table, column("product_id"), column("stock"), column("initial_stock")
    )
    orders = table(
        orders_table, column("order_id"), column("product_id"), column("stream_id")
    )
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(products.c.stock, products.c.initial_stock).where(
                    products.c.product_id == product_id
                )
            ).first()
            rows = conn.execute(
                select(orders.c.order_id, orders.c.stream_id).where(
                    orders.c.product_id == product_id
                )
            ).all()
    except SQLAlchemyError as error:
        raise ActivityFailed(f"could not read stock and orders from SQL: {error}")
    finally:
        engine.dispose()
    stock, initial = (int(row[0]), int(row[1])) if row else (None, None)
    return stock, initial, [(str(r[0]), str(r[1])) for r in rows]
