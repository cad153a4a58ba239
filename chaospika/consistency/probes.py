"""Consistency probes: does the stored data agree with what users were told?"""

import logging
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from sqlalchemy import column, select, table
from sqlalchemy.exc import SQLAlchemyError

from chaospika import _records
from chaospika._clients import sql_engine
from chaospika._secrets import redact_text
from chaospika._validate import require_duration, require_int, require_text
from chaospika.consistency.stock import StockFacts, judge
from chaospika.load.session import RECORD_KIND
from chaospika.redis import _streams

__all__ = ["stock_consistency"]

logger = logging.getLogger("chaostoolkit")

# Column roles and their default names (the sandbox's schema).
COLUMNS = {
    "product_id": "product_id",  # products: the product's id
    "stock": "stock",  # products: units left (None: no SQL stock kept)
    "initial_stock": "initial_stock",  # products: units at the start (None: argument)
    "order_id": "order_id",  # orders: the id clients were given
    "order_product_id": "product_id",  # orders: which product
    "sequence": "stream_id",  # orders: arrival order (stream id or a serial)
}


def stock_consistency(
    redis_url: str,
    db_url: str,
    product_id: str,
    load: str = None,
    acknowledged_ids: list = None,
    initial_stock: int = None,
    stream: str = "orders:stream",
    group: str = "inventory",
    id_field: str = "order_id",
    timeout: float = 30.0,
    stock_key: str = "stock:{product_id}",
    products_table: str = "products",
    orders_table: str = "orders",
    columns: dict = None,
    allow_unexpected: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Check stock and orders across Redis and SQL once the queue has drained.

    Waits up to `timeout` (seconds or "30s") for `group` to drain `stream`, then
    compares: initial = remaining + orders in both stores, no negative stock, no
    order stored twice (`duplicates`), none beyond the initial stock
    (`oversold`). Entries still pending or undelivered are `stuck` (their
    `id_field`). Given the ids clients saw acknowledged (`acknowledged_ids`, or
    those captured by the load named `load`), an acknowledged id in neither SQL
    nor the queue is `lost`, a stored id never acknowledged `unexpected`.
    The initial stock is read from SQL (`columns.initial_stock`) and falls back
    to `initial_stock` where the table has none, once the product is on sale. `columns` renames the SQL columns (keys: product_id, stock, initial_stock,
    order_id, order_product_id, sequence; null for stock, initial_stock or
    sequence when the table has none). An unhealthy system is reported, never
    raised: {"consistent": false, "violations": [...], "lost": [...], ...}.
    """
    product_id = require_text("product_id", product_id)
    wait = require_duration("timeout", timeout, maximum=3600)
    if initial_stock is not None:
        initial_stock = require_int("initial_stock", initial_stock)
    if acknowledged_ids is not None and not isinstance(acknowledged_ids, list):
        raise ActivityFailed("argument 'acknowledged_ids' must be a list of order ids")
    for arg, value in (
        ("stream", stream),
        ("group", group),
        ("id_field", id_field),
        ("stock_key", stock_key),
        ("products_table", products_table),
        ("orders_table", orders_table),
    ):
        require_text(arg, value)
    names = _columns(columns)
    if names["initial_stock"] is None and initial_stock is None:
        raise ActivityFailed(
            "argument 'initial_stock' is needed when columns.initial_stock is null"
        )
    try:
        key = stock_key.format(product_id=product_id)
    except (KeyError, IndexError, ValueError) as error:
        raise ActivityFailed(
            f"argument 'stock_key' must be a template using only {{product_id}}, "
            f"got {stock_key!r} ({error})"
        ) from None
    acknowledged = _acknowledged(load, acknowledged_ids)
    drain, stuck = _drain_and_stuck(redis_url, stream, group, id_field, wait, secrets)
    with _streams.connected(redis_url, secrets=secrets) as client:
        raw = client.get(key)
    try:
        redis_stock = int(raw) if raw is not None else None
    except ValueError:
        raise ActivityFailed(f"Redis key {key!r} holds {raw!r}, not a stock count")
    sql_stock, sql_initial, orders = _read_sql(
        db_url, products_table, orders_table, names, product_id, secrets
    )
    on_sale = sql_stock is not None or bool(orders) or redis_stock is not None
    if sql_initial is None and on_sale:
        sql_initial = initial_stock
    facts = StockFacts(
        product_id,
        sql_initial,
        redis_stock,
        sql_stock,
        orders,
        acknowledged,
        stuck=[item["id"] for item in stuck if item["id"] is not None],
    )
    result = judge(facts, allow_unexpected=allow_unexpected)
    result.update(
        drained=drain["drained"],
        drain_seconds=drain["drain_seconds"],
        pending_count=drain["pending"],
        lag_count=drain["lag"],
    )
    if not drain["drained"]:
        result["consistent"] = False
        result["violations"].insert(
            0,
            f"queue not drained within {wait:g} s: {drain['pending']} pending, "
            f"{drain['lag']} undelivered",
        )
    log = logger.info if result["consistent"] else logger.warning
    log("stock consistency of %s: %s", product_id, result["violations"] or "consistent")
    return result


def _columns(columns: Any) -> dict[str, str | None]:
    if columns is None:
        return dict(COLUMNS)
    if not isinstance(columns, dict):
        raise ActivityFailed(
            f"argument 'columns' must be an object of column names, got {columns!r}"
        )
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        raise ActivityFailed(
            f"argument 'columns': unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(COLUMNS)}"
        )
    names = {**COLUMNS, **columns}
    for role, name in names.items():
        optional = role in ("stock", "initial_stock", "sequence")
        if name in (None, "") and optional:
            names[role] = None
        else:
            names[role] = require_text(f"columns.{role}", name)
    return names


def _drain_and_stuck(
    redis_url: str,
    stream: str,
    group: str,
    id_field: str,
    wait: float,
    secrets: Secrets = None,
) -> tuple[dict, list[dict]]:
    """Wait for the drain; list what is still owed (none if the stream is absent)."""
    with _streams.connected(redis_url, secrets=secrets) as client:
        present = bool(client.exists(stream.strip()))
    if not present:
        facts = {"drained": True, "drain_seconds": 0.0, "pending": 0, "lag": 0}
        return facts, []
    drain = _streams.wait_drained(redis_url, stream, group, wait, 0.1, secrets)
    if drain["drained"]:
        return drain, []
    with _streams.connected(redis_url, secrets=secrets) as client:
        return drain, _streams.outstanding(client, stream.strip(), group, id_field)


def _acknowledged(load: str | None, ids: list[str] | None) -> list[str] | None:
    if ids is not None:
        return [str(i) for i in ids]
    if load is None:
        return None
    record = _records.get(RECORD_KIND, require_text("load", load))
    if record is None:
        logger.info("load '%s' has not run yet: no acknowledged ids to compare", load)
        return None
    return [str(i) for i in record.get("captures", {}).get("order_id", [])]


def _read_sql(
    db_url: str,
    products_table: str,
    orders_table: str,
    names: dict[str, str | None],
    product_id: str,
    secrets: Secrets = None,
) -> tuple[int | None, int | None, list[tuple[str, str]]]:
    engine = sql_engine(db_url, secrets=secrets)
    product_columns = [names["product_id"], names["stock"], names["initial_stock"]]
    products = table(products_table, *(column(c) for c in product_columns if c))
    order_columns = [names["order_id"], names["order_product_id"], names["sequence"]]
    orders = table(orders_table, *(column(c) for c in order_columns if c))
    try:
        with engine.connect() as conn:
            row = None
            if names["stock"] or names["initial_stock"]:
                wanted = [products.c[c] for c in product_columns[1:] if c]
                row = conn.execute(
                    select(*wanted).where(products.c[names["product_id"]] == product_id)
                ).first()
            wanted = [orders.c[c] for c in order_columns if c]
            rows = conn.execute(
                select(*wanted).where(orders.c[names["order_product_id"]] == product_id)
            ).all()
    except SQLAlchemyError as error:
        raise ActivityFailed(
            f"could not read stock and orders from SQL: {type(error).__name__}: "
            f"{redact_text(getattr(error, 'orig', None) or error)}"
        ) from None
    finally:
        engine.dispose()
    stock = initial = None
    if row is not None:
        values = list(row)
        if names["stock"]:
            first = values.pop(0)
            stock = None if first is None else int(first)
        if names["initial_stock"]:
            initial = None if values[0] is None else int(values[0])
    if names["sequence"]:
        return stock, initial, [(str(r[0]), str(r[2])) for r in rows]
    return stock, initial, [(str(r[0]), "") for r in rows]
