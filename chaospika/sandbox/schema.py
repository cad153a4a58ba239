"""Data layout of the sandbox: its Redis keys and its SQL tables (SQLAlchemy Core)."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from chaospika.sandbox.bugs import NON_IDEMPOTENT_WORKER

__all__ = [
    "GROUP",
    "STREAM",
    "SandboxTables",
    "create_tables",
    "decrement_stock",
    "drop_tables",
    "ensure_group",
    "idem_key",
    "init_product",
    "insert_order",
    "make_tables",
    "row_counts",
    "stock_key",
    "tables_for_bugs",
    "ws_channel",
]

STREAM = "orders:stream"
GROUP = "inventory"
IDEM_TTL_SECONDS = 24 * 3600


def stock_key(product_id: str) -> str:
    """Redis key of the remaining stock of `product_id`."""
    return f"stock:{product_id}"


def idem_key(key: str) -> str:
    """Redis key mapping an Idempotency-Key to its order id."""
    return f"idem:{key}"


def ws_channel(channel: str) -> str:
    """Redis pub/sub channel of the WebSocket channel `channel`."""
    return f"ws:{channel}"


def ensure_group(client: Any, mkstream: bool = True) -> bool:
    """Create the consumer group (at id 0) if missing; True if created now.

    With `mkstream` the stream is created too when missing; without it a
    missing stream raises ResponseError.
    """
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=mkstream)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
        return False
    return True


@dataclass(frozen=True)
class SandboxTables:
    """The sandbox's tables bound to their own MetaData."""

    metadata: MetaData
    products: Table
    orders: Table
    unique_orders: bool


def make_tables(unique_orders: bool = True) -> SandboxTables:
    """Return the `products` and `orders` tables; `unique_orders` adds UNIQUE(order_id)."""
    metadata = MetaData()
    products = Table(
        "products",
        metadata,
        Column("product_id", String(64), primary_key=True),
        Column("stock", Integer, nullable=False),
        Column("initial_stock", Integer, nullable=False),
    )
    constraints = [UniqueConstraint("order_id", name="uq_orders_order_id")]
    orders = Table(
        "orders",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("order_id", String(64), nullable=False),
        Column("product_id", String(64), nullable=False),
        Column("user_id", String(64)),
        Column("idempotency_key", String(128)),
        Column("stream_id", String(32), nullable=False),
        Column("created_at", Float(precision=53)),
        *(constraints if unique_orders else []),
    )
    return SandboxTables(metadata, products, orders, unique_orders)


def tables_for_bugs(bugs: Iterable[str] = ()) -> SandboxTables:
    """Return the tables of a sandbox seeded with `bugs` (no unique key if non-idempotent)."""
    return make_tables(unique_orders=NON_IDEMPOTENT_WORKER not in tuple(bugs))


def create_tables(engine: Engine, bugs: Iterable[str] = ()) -> SandboxTables:
    """Create the tables for `bugs` if they do not exist yet and return them."""
    tables = tables_for_bugs(bugs)
    tables.metadata.create_all(engine, checkfirst=True)
    return tables


def drop_tables(engine: Engine) -> None:
    """Drop the sandbox's tables if they exist."""
    make_tables().metadata.drop_all(engine, checkfirst=True)


def row_counts(engine: Engine) -> list[tuple[str, int]]:
    """(table, rows) of the sandbox's tables that exist."""
    tables = make_tables()
    present = inspect(engine).get_table_names()
    counts = []
    with engine.connect() as conn:
        for item in (tables.products, tables.orders):
            if item.name in present:
                rows = conn.execute(select(func.count()).select_from(item)).scalar()
                counts.append((item.name, int(rows)))
    return counts


def insert_order(conn: Connection, tables: SandboxTables, row: dict[str, Any]) -> bool:
    """Insert an order row; with the unique key, skip it if order_id is present.

    Returns True if a row was inserted. Without the unique key (the seeded bug
    `non-idempotent-worker`) it is a plain INSERT that always inserts.
    """
    orders = tables.orders
    if not tables.unique_orders:
        conn.execute(insert(orders).values(**row))
        return True
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        statement = (
            dialect_insert(orders)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["order_id"])
            .returning(orders.c.id)
        )
        return conn.execute(statement).first() is not None
    if dialect in ("mysql", "mariadb"):
        statement = insert(orders).values(**row).prefix_with("IGNORE")
        return conn.execute(statement).rowcount == 1
    try:
        with conn.begin_nested():
            conn.execute(insert(orders).values(**row))
    except IntegrityError:
        return False
    return True


def decrement_stock(conn: Connection, tables: SandboxTables, product_id: str) -> int:
    """Take one unit off the SQL stock of `product_id`; return the rows updated."""
    products = tables.products
    statement = (
        update(products)
        .where(products.c.product_id == product_id)
        .values(stock=products.c.stock - 1)
    )
    return conn.execute(statement).rowcount


def init_product(
    conn: Connection, tables: SandboxTables, product_id: str, stock: int
) -> int:
    """Set the product row to `stock` (initial too) and delete its orders.

    Returns the number of order rows deleted.
    """
    products, orders = tables.products, tables.orders
    conn.execute(delete(products).where(products.c.product_id == product_id))
    conn.execute(
        insert(products).values(product_id=product_id, stock=stock, initial_stock=stock)
    )
    return conn.execute(
        delete(orders).where(orders.c.product_id == product_id)
    ).rowcount
