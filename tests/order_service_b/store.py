"""Service B's storage names and its PostgreSQL side (psycopg 3)."""

from collections.abc import Iterable

import psycopg

__all__ = [
    "PURCHASES",
    "STOCK",
    "STREAM",
    "ensure_schema",
    "open_inventory",
    "record_purchases",
]

STREAM = "shop:purchases"  # Redis stream from the API to the worker
STOCK = "b_stock"
PURCHASES = "b_purchases"
SCHEMA_LOCK = 0x0B5709  # advisory lock id: API and worker may create the schema at once

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {STOCK} (
    sku TEXT PRIMARY KEY,
    units_left INTEGER NOT NULL,
    units_start INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {PURCHASES} (
    seq BIGSERIAL PRIMARY KEY,
    ref TEXT NOT NULL,
    sku TEXT NOT NULL,
    buyer TEXT,
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT b_purchases_ref_once UNIQUE (ref)
);
"""


def ensure_schema(dsn: str) -> None:
    """Create both tables unless they exist (serialised by an advisory lock)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)


def open_inventory(dsn: str, sku: str, quantity: int) -> None:
    """Start a sale of `quantity` units of `sku` (purchases of earlier sales stay)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            f"INSERT INTO {STOCK} (sku, units_left, units_start) VALUES (%s, %s, %s) "
            "ON CONFLICT (sku) DO UPDATE SET units_left = EXCLUDED.units_left, "
            "units_start = EXCLUDED.units_start",
            (sku, quantity, quantity),
        )


def record_purchases(
    conn: psycopg.Connection, purchases: Iterable[tuple[str, str, str | None]]
) -> int:
    """Insert (ref, sku, buyer) rows once each, taking one unit per new row.

    Runs in the caller's transaction; a ref already stored is skipped, so a batch
    delivered twice (after a crash) changes nothing. Returns the rows inserted.
    """
    inserted = 0
    with conn.cursor() as cursor:
        for ref, sku, buyer in purchases:
            cursor.execute(
                f"INSERT INTO {PURCHASES} (ref, sku, buyer) VALUES (%s, %s, %s) "
                "ON CONFLICT (ref) DO NOTHING RETURNING seq",
                (ref, sku, buyer),
            )
            if cursor.fetchone() is None:
                continue
            cursor.execute(
                f"UPDATE {STOCK} SET units_left = units_left - 1 WHERE sku = %s",
                (sku,),
            )
            inserted += 1
    return inserted
