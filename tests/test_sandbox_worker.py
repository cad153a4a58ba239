"""The inventory worker, as a real process against a real Redis and real SQL databases."""

import os
import signal
import time
import uuid

import pytest
import redis
import sandbox_fixtures
from sandbox_fixtures import stop_process, wait_until
from sqlalchemy import create_engine, func, select

from chaospika._ports import free_port
from chaospika.sandbox import schema
from chaospika.sandbox.redis_server import start_redis

spawn = sandbox_fixtures.spawn  # fixture

STOCK = 10


class Shop:
    """The stream and tables a worker reads and writes, as the API leaves them."""

    def __init__(self, redis_url: str, db_url: str, bugs: tuple[str, ...] = ()):
        self.redis_url, self.db_url, self.bugs = redis_url, db_url, bugs
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.engine = create_engine(db_url)
        self.tables = schema.create_tables(self.engine, bugs)
        with self.engine.begin() as conn:
            schema.init_product(conn, self.tables, "p1", STOCK)
        schema.ensure_group(self.client)

    def add_order(self, order_id: str | None = None) -> tuple[str, str]:
        """XADD one accepted order; return (order_id, stream id)."""
        order_id = order_id or uuid.uuid4().hex
        stream_id = self.client.xadd(
            schema.STREAM,
            {
                "order_id": order_id,
                "product_id": "p1",
                "user_id": f"user-{order_id[:6]}",
                "idempotency_key": f"key-{order_id}",
                "accepted_at": repr(time.time()),
            },
        )
        return order_id, stream_id

    def rows(self) -> list[tuple]:
        orders = self.tables.orders
        columns = [
            orders.c.order_id,
            orders.c.product_id,
            orders.c.user_id,
            orders.c.idempotency_key,
            orders.c.stream_id,
        ]
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(select(*columns))]

    def row_count(self) -> int:
        with self.engine.connect() as conn:
            query = select(func.count()).select_from(self.tables.orders)
            return conn.execute(query).scalar_one()

    def stock(self) -> int:
        products = self.tables.products
        with self.engine.connect() as conn:
            query = select(products.c.stock).where(products.c.product_id == "p1")
            return conn.execute(query).scalar_one()

    def backlog(self) -> tuple[int, int]:
        """(pending, lag) of the consumer group."""
        group = self.client.xinfo_groups(schema.STREAM)[0]
        return group["pending"], group["lag"]

    def drained(self) -> bool:
        return self.backlog() == (0, 0)

    def close(self) -> None:
        self.client.close()
        self.engine.dispose()


@pytest.fixture
def make_shop(redis_url):
    shops = []

    def make(db_url: str, bugs: tuple[str, ...] = ()) -> Shop:
        shops.append(Shop(redis_url, db_url, bugs))
        return shops[-1]

    yield make
    for shop in shops:
        shop.close()


@pytest.fixture
def start_worker(spawn):
    """Factory: run one worker process for a Shop with extra command-line options."""

    def start(shop: Shop, *options: str):
        return spawn(
            "chaospika.sandbox.worker",
            "--redis-url", shop.redis_url,
            "--db-url", shop.db_url,
            "--bugs", ",".join(shop.bugs),
            *options,
        )  # fmt: skip

    return start


@pytest.mark.parametrize("database", ["sqlite_url", "postgres_url", "mysql_url"])
def test_worker_writes_each_order_once_and_takes_the_stock(
    request, database, make_shop, start_worker
):
    shop = make_shop(request.getfixturevalue(database))
    added = [shop.add_order() for _ in range(5)]
    worker = start_worker(shop, "--batch", "2", "--work-ms", "1")

    wait_until(lambda: shop.row_count() == 5 and shop.drained())
    expected = {
        (order_id, "p1", f"user-{order_id[:6]}", f"key-{order_id}", stream_id)
        for order_id, stream_id in added
    }
    assert set(shop.rows()) == expected
    assert shop.stock() == STOCK - 5

    later, later_stream_id = shop.add_order()
    wait_until(lambda: shop.row_count() == 6 and shop.drained())
    assert (later, later_stream_id) in {(row[0], row[4]) for row in shop.rows()}
    assert shop.stock() == STOCK - 6
    assert worker.poll() is None


def kill_mid_batch(shop: Shop, worker, committed: int) -> None:
    """SIGKILL `worker` as soon as `committed` rows are in SQL (mid-batch)."""
    wait_until(lambda: shop.row_count() >= committed, timeout=15, step=0.01)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(5)
    assert shop.row_count() == committed


@pytest.mark.parametrize(
    ("consumer", "claim_options"),
    [("worker-1", []), ("worker-2", ["--claim-idle-ms", "0"])],
    ids=["own-pending", "claimed-from-dead-consumer"],
)
def test_redelivered_entries_after_a_kill_make_no_second_row(
    sqlite_url, make_shop, start_worker, consumer, claim_options
):
    shop = make_shop(sqlite_url)
    added = [shop.add_order() for _ in range(2)]
    worker = start_worker(shop, "--batch", "2", "--work-ms", "1500")
    kill_mid_batch(shop, worker, committed=1)
    assert shop.backlog() == (2, 0)  # both still pending: ack only after the batch

    start_worker(shop, "--consumer", consumer, "--work-ms", "1", *claim_options)
    wait_until(lambda: shop.drained() and shop.row_count() >= 2)
    time.sleep(0.2)
    assert sorted(row[0] for row in shop.rows()) == sorted(o for o, _ in added)
    assert shop.stock() == STOCK - 2
    consumers = shop.client.xinfo_consumers(schema.STREAM, schema.GROUP)
    assert all(entry["pending"] == 0 for entry in consumers)


@pytest.mark.parametrize(
    ("bugs", "drains"), [((), True), (("no-claim",), False)], ids=["claims", "no-claim"]
)
def test_a_worker_under_a_new_name_finishes_a_dead_consumers_entries(
    sqlite_url, make_shop, start_worker, bugs, drains
):
    """Recovery for real: the restarted worker is another consumer and must claim."""
    shop = make_shop(sqlite_url, bugs=bugs)
    added = [shop.add_order() for _ in range(3)]
    worker = start_worker(shop, "--batch", "3", "--work-ms", "1500")
    dead = f"worker-{worker.pid}"
    kill_mid_batch(shop, worker, committed=1)
    assert shop.backlog() == (3, 0)

    # Started before the dead consumer's entries are idle long enough: they are
    # claimed later, while running, not only at start.
    fresh = start_worker(shop, "--work-ms", "1", "--claim-idle-ms", "800")
    if drains:
        wait_until(lambda: shop.drained() and shop.row_count() >= 3, timeout=10)
        assert sorted(row[0] for row in shop.rows()) == sorted(o for o, _ in added)
        names = wait_until(
            lambda: (
                [
                    c["name"]
                    for c in shop.client.xinfo_consumers(schema.STREAM, schema.GROUP)
                    if c["name"] == dead
                ]
                == []
            ),
            timeout=10,
        )
        assert names
    else:
        time.sleep(2.5)
        assert shop.backlog() == (3, 0) and shop.row_count() == 1
    consumers = shop.client.xinfo_consumers(schema.STREAM, schema.GROUP)
    assert f"worker-{fresh.pid}" in [c["name"] for c in consumers]


def test_non_idempotent_worker_bug_duplicates_a_redelivered_entry(
    sqlite_url, make_shop, start_worker
):
    shop = make_shop(sqlite_url, bugs=("non-idempotent-worker",))
    first, _ = shop.add_order()
    second, _ = shop.add_order()
    worker = start_worker(shop, "--batch", "2", "--work-ms", "1500")
    kill_mid_batch(shop, worker, committed=1)

    start_worker(shop, "--work-ms", "1")
    wait_until(lambda: shop.drained() and shop.row_count() >= 3)
    time.sleep(0.2)
    assert sorted(row[0] for row in shop.rows()) == sorted([first, first, second])
    assert shop.stock() == STOCK - 3


@pytest.mark.parametrize(
    ("bugs", "pending_after_kill", "rows_after_restart"),
    [((), 5, 5), (("ack-before-commit",), 0, 1)],
    ids=["ack-after-commit", "ack-before-commit"],
)
def test_kill_mid_batch_loses_orders_only_with_ack_before_commit(
    sqlite_url, make_shop, start_worker, bugs, pending_after_kill, rows_after_restart
):
    shop = make_shop(sqlite_url, bugs=bugs)
    for _ in range(5):
        shop.add_order()
    worker = start_worker(shop, "--batch", "5", "--work-ms", "1000")
    kill_mid_batch(shop, worker, committed=1)
    assert shop.backlog() == (pending_after_kill, 0)

    start_worker(shop, "--work-ms", "1")
    marker, _ = shop.add_order()  # processed only once recovery is over
    wait_until(lambda: marker in {row[0] for row in shop.rows()} and shop.drained())
    assert shop.row_count() == rows_after_restart + 1
    assert shop.stock() == STOCK - rows_after_restart - 1


def test_sigterm_finishes_the_current_entry_and_exits_0(
    sqlite_url, make_shop, start_worker
):
    shop = make_shop(sqlite_url)
    for _ in range(3):
        shop.add_order()
    worker = start_worker(shop, "--batch", "3", "--work-ms", "1000")
    wait_until(lambda: shop.row_count() >= 1, timeout=15, step=0.01)
    time.sleep(0.3)  # now surely inside the 1 s of work of the second entry
    worker.terminate()

    assert worker.wait(10) == 0
    assert shop.row_count() == 2  # the entry in progress at SIGTERM was finished
    assert shop.backlog() == (1, 0)  # the third is left pending for the next worker


def test_worker_waits_for_redis_then_processes(sqlite_url, spawn, tmp_path):
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    worker = spawn(
        "chaospika.sandbox.worker",
        "--redis-url", redis_url,
        "--db-url", sqlite_url,
        "--work-ms", "1",
    )  # fmt: skip
    wait_until(lambda: "retrying" in worker.log_path.read_text(), timeout=15)
    assert worker.poll() is None

    server = start_redis(port, str(tmp_path / "late-redis"))
    try:
        shop = Shop(redis_url, sqlite_url)
        order_id, _ = shop.add_order()
        wait_until(lambda: shop.row_count() == 1, timeout=15)
        assert shop.rows()[0][0] == order_id
        shop.close()
    finally:
        stop_process(worker)
        stop_process(server)


@pytest.mark.parametrize(
    "options",
    [["--batch", "0"], ["--work-ms", "-1"], ["--bugs", "nope"], []],
    ids=["batch", "work-ms", "bugs", "no-db-url"],
)
def test_worker_rejects_bad_options(spawn, redis_url, sqlite_url, options):
    db = [] if not options else ["--db-url", sqlite_url]
    worker = spawn("chaospika.sandbox.worker", "--redis-url", redis_url, *db, *options)
    assert worker.wait(15) == 2


def test_worker_survives_its_stream_deleted_then_restored(
    sqlite_url, make_shop, start_worker
):
    """A flush deletes stream and group; a new order recreates the stream without
    the group; a RESTORE ... REPLACE brings the old one back: no crash, none lost."""
    shop = make_shop(sqlite_url)
    worker = start_worker(shop, "--work-ms", "1", "--claim-idle-ms", "500")
    first, _ = shop.add_order()
    wait_until(lambda: shop.row_count() == 1 and shop.drained())
    shop.client.xgroup_createconsumer(schema.STREAM, schema.GROUP, "elsewhere")
    stuck, _ = shop.add_order()  # delivered to another consumer, unacked
    shop.client.xreadgroup(schema.GROUP, "elsewhere", {schema.STREAM: ">"}, count=1)
    raw = redis.Redis.from_url(shop.redis_url)  # DUMP payloads are bytes
    dump = raw.dump(schema.STREAM)

    shop.client.delete(schema.STREAM)  # what a flush does to it
    wait_until(lambda: "is gone; waiting" in worker.log_path.read_text(), timeout=10)
    time.sleep(0.3)  # more read attempts
    assert shop.client.exists(schema.STREAM) == 0  # the worker did not recreate it

    between, _ = shop.add_order()  # XADD makes a new stream, without the group
    wait_until(lambda: between in {row[0] for row in shop.rows()}, timeout=10)
    assert "created it at id 0" in worker.log_path.read_text()

    raw.restore(schema.STREAM, 0, dump, replace=True)
    raw.close()
    after, _ = shop.add_order()
    wait_until(lambda: shop.row_count() == 4 and shop.drained(), timeout=15)
    assert {row[0] for row in shop.rows()} == {first, stuck, between, after}
    assert worker.poll() is None
    assert "Traceback" not in worker.log_path.read_text()
