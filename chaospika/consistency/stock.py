"""Stock bookkeeping checks, Jepsen style: what clients were told vs what was stored."""

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["StockFacts", "judge"]


class StockFacts:
    """What the probe read: stock counters, the initial stock and the stored orders."""

    def __init__(
        self,
        product_id: str,
        initial_stock: int | None,
        redis_stock: int | None,
        sql_stock: int | None,
        orders: Sequence[tuple[str, str]],
        acknowledged: Iterable[str] | None,
        stuck: Iterable[str] = (),
    ) -> None:
        self.product_id = product_id
        self.initial_stock = initial_stock
        self.redis_stock = redis_stock
        self.sql_stock = sql_stock
        self.orders = sorted(orders, key=lambda row: _stream_order(row[1]))
        self.acknowledged = None if acknowledged is None else list(acknowledged)
        self.stuck = list(dict.fromkeys(stuck))


def _stream_order(stream_id: str) -> tuple[int, int]:
    """Stream ids ("1700000000000-3") and integers sort numerically; anything else
    (a timestamp, say) keeps the order the database returned (sorted by it)."""
    millis, _, seq = str(stream_id).partition("-")
    try:
        return int(millis), int(seq or 0)
    except ValueError:
        return (0, 0)


def judge(facts: StockFacts, allow_unexpected: bool = False) -> dict[str, Any]:
    """Name every lost, stuck, unexpected, duplicated and oversold order.

    stuck: still owed by the queue (pending or undelivered) and not in SQL;
    lost: acknowledged to a client, in neither SQL nor the queue.
    """
    ids = [order_id for order_id, _ in facts.orders]
    counts = Counter(ids)
    duplicates = {order_id: n for order_id, n in counts.items() if n > 1}
    distinct = list(dict.fromkeys(ids))
    violations: list[str] = []
    initial = facts.initial_stock
    oversold: list[str] = []
    if initial is None:
        if (
            ids
            or facts.redis_stock not in (None, 0)
            or facts.sql_stock not in (None, 0)
        ):
            violations.append("product has stock or orders but no initial stock")
    else:
        oversold = distinct[initial:]
        if oversold:
            violations.append(
                f"{len(oversold)} orders beyond the initial stock of {initial}"
            )
        if facts.redis_stock is None:
            violations.append("no stock counter in Redis")
        elif facts.redis_stock + len(distinct) != initial:
            violations.append(
                f"Redis stock {facts.redis_stock} + {len(distinct)} orders != initial {initial}"
            )
        if facts.sql_stock is not None and facts.sql_stock + len(ids) != initial:
            violations.append(
                f"SQL stock {facts.sql_stock} + {len(ids)} order rows != initial {initial}"
            )
    for where, value in (("Redis", facts.redis_stock), ("SQL", facts.sql_stock)):
        if value is not None and value < 0:
            violations.append(f"negative stock in {where}: {value}")
    both = facts.redis_stock is not None and facts.sql_stock is not None
    if both and facts.redis_stock != facts.sql_stock:
        violations.append(
            f"Redis stock {facts.redis_stock} != SQL stock {facts.sql_stock}"
        )
    if duplicates:
        violations.append(f"{len(duplicates)} orders stored more than once")
    lost: list[str] = []
    unexpected: list[str] = []
    stored = set(distinct)
    stuck = [order_id for order_id in facts.stuck if order_id not in stored]
    if stuck:
        violations.append(f"{len(stuck)} orders stuck in the queue, not in SQL")
    if facts.acknowledged is not None:
        acknowledged = set(facts.acknowledged)
        lost = sorted(acknowledged - stored - set(stuck))
        unexpected = [order_id for order_id in distinct if order_id not in acknowledged]
        if lost:
            violations.append(f"{len(lost)} acknowledged orders missing from SQL")
        if unexpected and not allow_unexpected:
            violations.append(f"{len(unexpected)} stored orders never acknowledged")
    return {
        "consistent": not violations,
        "violations": violations,
        "product_id": facts.product_id,
        "initial_stock": initial,
        "redis_stock": facts.redis_stock,
        "sql_stock": facts.sql_stock,
        "order_rows": len(ids),
        "distinct_orders": len(distinct),
        "acknowledged_count": None
        if facts.acknowledged is None
        else len(set(facts.acknowledged)),
        "lost": lost,
        "lost_count": len(lost),
        "stuck": stuck,
        "stuck_count": len(stuck),
        "unexpected": unexpected,
        "unexpected_count": len(unexpected),
        "duplicates": duplicates,
        "duplicate_count": len(duplicates),
        "oversold": oversold,
        "oversold_count": len(oversold),
    }
